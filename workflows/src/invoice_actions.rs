//! Invoice reads and state transitions:
//! `DRAFT → OPEN → PAID | VOID | UNCOLLECTIBLE` (a zero-total draft goes
//! straight to PAID at finalization).
//!
//! [`finalize`] is the one finalization routine: the API's
//! `finalizeInvoice` and the worker's finalization step both call it inside
//! their own transaction. Every transition is a compare-and-set on the
//! current status, so a racing second caller changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use entity::{
    Dec, InvoiceKind, InvoiceLineKind, InvoiceStatus, SubscriptionStatus, invoice, invoice_line,
    organization, pending_invoice_item, subscription, usage_event,
};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, Set, Statement,
};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::jobs::{Job, record_in_outbox};
use crate::pagination::{self, Page};
use crate::subscriptions::{org_tz, terms};
use crate::tenancy::add_days;

/// THE conversion of stored minor units to an amount in `currency`
/// (`1234` USD → `12.34`, JPY → `1234`, KWD → `1.234`).
pub fn amount_from_minor(currency: &str, minor: i64) -> WorkflowResult<Decimal> {
    Ok(billing::Currency::parse(currency)
        .map_err(|e| WorkflowError::Internal(e.to_string()))?
        .from_minor_units(minor))
}

fn currency_of(code: &str) -> WorkflowResult<billing::Currency> {
    billing::Currency::parse(code).map_err(|e| WorkflowError::Internal(e.to_string()))
}

pub fn line_kind(kind: InvoiceLineKind) -> billing::LineKind {
    match kind {
        InvoiceLineKind::Subscription => billing::LineKind::Subscription,
        InvoiceLineKind::Usage => billing::LineKind::Usage,
        InvoiceLineKind::Proration => billing::LineKind::Proration,
        InvoiceLineKind::LateUsage => billing::LineKind::LateUsage,
    }
}

pub fn entity_line_kind(kind: billing::LineKind) -> InvoiceLineKind {
    match kind {
        billing::LineKind::Subscription => InvoiceLineKind::Subscription,
        billing::LineKind::Usage => InvoiceLineKind::Usage,
        billing::LineKind::Proration => InvoiceLineKind::Proration,
        billing::LineKind::LateUsage => InvoiceLineKind::LateUsage,
    }
}

/// A stored line as the billing core sees it.
pub fn billing_line(
    currency: billing::Currency,
    line: &invoice_line::Model,
) -> billing::InvoiceLine {
    billing::InvoiceLine {
        kind: line_kind(line.kind),
        description: line.description.clone(),
        price_id: line.price_id.clone(),
        quantity: line.quantity.get(),
        unit_amount: line.unit_amount.map(Dec::get),
        amount: currency.from_minor_units(line.amount_minor),
        period: billing::Period::new(line.period_start, line.period_end),
    }
}

pub async fn get_invoice<C: ConnectionTrait>(
    db: &C,
    org: &str,
    id: &str,
) -> WorkflowResult<Option<invoice::Model>> {
    Ok(invoice::Entity::find_by_id(id.to_string())
        .filter(invoice::Column::OrganizationId.eq(org))
        .one(db)
        .await?)
}

async fn find_invoice<C: ConnectionTrait>(
    db: &C,
    org: &str,
    id: &str,
) -> WorkflowResult<invoice::Model> {
    get_invoice(db, org, id)
        .await?
        .ok_or(WorkflowError::NotFound("invoice"))
}

/// Filters of the invoice list.
#[derive(Clone, Debug, Default)]
pub struct InvoiceFilter {
    pub status: Option<InvoiceStatus>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
}

pub async fn list_invoices<C: ConnectionTrait>(
    db: &C,
    org: &str,
    filter: InvoiceFilter,
    first: u64,
    after: Option<String>,
) -> WorkflowResult<Page<invoice::Model>> {
    let mut select = invoice::Entity::find().filter(invoice::Column::OrganizationId.eq(org));
    if let Some(status) = filter.status {
        select = select.filter(invoice::Column::Status.eq(status));
    }
    if let Some(c) = filter.customer_id {
        select = select.filter(invoice::Column::CustomerId.eq(c));
    }
    if let Some(s) = filter.subscription_id {
        select = select.filter(invoice::Column::SubscriptionId.eq(s));
    }
    Ok(pagination::page(db, select, invoice::Column::Id, first, after).await?)
}

/// Lines of these invoices, grouped by invoice, in position order.
pub async fn lines_of<C: ConnectionTrait>(
    db: &C,
    org: &str,
    invoice_ids: Vec<String>,
) -> WorkflowResult<HashMap<String, Vec<invoice_line::Model>>> {
    if invoice_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let lines = invoice_line::Entity::find()
        .filter(invoice_line::Column::OrganizationId.eq(org))
        .filter(invoice_line::Column::InvoiceId.is_in(invoice_ids))
        .order_by_asc(invoice_line::Column::Position)
        .all(db)
        .await?;
    Ok(pagination::group_by_parent(lines, |l| Some(&l.invoice_id)))
}

/// Invoices of these subscriptions, grouped by subscription.
pub async fn invoices_of_subscriptions<C: ConnectionTrait>(
    db: &C,
    org: &str,
    subscription_ids: Vec<String>,
) -> WorkflowResult<HashMap<String, Vec<invoice::Model>>> {
    if subscription_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let invoices = invoice::Entity::find()
        .filter(invoice::Column::OrganizationId.eq(org))
        .filter(invoice::Column::SubscriptionId.is_in(subscription_ids))
        .order_by_asc(invoice::Column::Id)
        .all(db)
        .await?;
    Ok(pagination::group_by_parent(invoices, |i| {
        i.subscription_id.as_deref()
    }))
}

fn illegal(invoice: &invoice::Model, action: &str, allowed: &str) -> WorkflowError {
    WorkflowError::bad_input(format!(
        "cannot {action} invoice {}: it is {}, only {allowed} invoices can be",
        invoice.id, invoice.status
    ))
}

/// The next `count` gapless numbers of `(org, year)`: one atomic upsert on
/// `invoice_sequences`, inside the caller's transaction (the row stays
/// locked until it commits, so numbers are gapless and never reused).
/// Returns the first of them.
async fn take_numbers<C: ConnectionTrait>(
    txn: &C,
    org: &str,
    year: i32,
    count: i64,
) -> WorkflowResult<i64> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO invoice_sequences (organization_id, year, last_seq) VALUES ($1, $2, $3) \
             ON CONFLICT (organization_id, year) DO UPDATE SET last_seq = invoice_sequences.last_seq + $3 \
             RETURNING last_seq"
        }
        _ => {
            "INSERT INTO invoice_sequences (organization_id, year, last_seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (organization_id, year) DO UPDATE SET last_seq = invoice_sequences.last_seq + ?3 \
             RETURNING last_seq"
        }
    };
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [org.into(), year.into(), count.into()],
        ))
        .await?
        .ok_or_else(|| WorkflowError::Internal("invoice sequence returned no row".into()))?;
    Ok(row.try_get::<i64>("", "last_seq")? - count + 1)
}

/// Finalizes a DRAFT: freezes its lines, assigns the next gapless number
/// `{prefix}-{YYYY}-{seq:06}` (year of `now` in the organization's
/// timezone), sets `dueAt = now + netTermsDays` and the content hash, and
/// makes it OPEN (with an overdue job) or, at total zero, PAID at once.
/// Runs inside the caller's transaction.
pub async fn finalize<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    invoice_id: &str,
    now: DateTime<Utc>,
    actor: &str,
) -> WorkflowResult<invoice::Model> {
    let finalized = freeze(txn, org, invoice_id, now).await?;
    audit::append(txn, &org.id, actor, finalized.audited(), now).await?;
    Ok(finalized.after)
}

/// An invoice [`freeze`] finalized, before and after.
#[derive(Clone, Debug)]
pub struct Finalized {
    pub before: invoice::Model,
    pub after: invoice::Model,
}

impl Finalized {
    /// The job that makes the invoice overdue when still unpaid at its due
    /// date (none when it was paid at once, at total zero).
    pub fn overdue_job(&self) -> Option<Job> {
        match (self.after.status, self.after.due_at) {
            (InvoiceStatus::Open, Some(due_at)) => Some(Job::invoice_overdue(
                &self.after.organization_id,
                &self.after.id,
                due_at,
            )),
            _ => None,
        }
    }

    /// When it was finalized.
    pub fn at(&self) -> DateTime<Utc> {
        self.after.finalized_at.unwrap_or(self.after.created_at)
    }

    /// Its audit entry (`invoice.finalized`).
    pub fn audited(&self) -> AuditEntry<'_> {
        AuditEntry {
            action: "invoice.finalized",
            entity_type: "invoice",
            entity_id: &self.after.id,
            before: snapshot(&self.before),
            after: snapshot(&self.after),
        }
    }
}

/// [`finalize`] without its audit entry, for steps that append their audit
/// entries last (row locks first, the chain lock last: see [`crate::audit`]).
pub async fn freeze<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> WorkflowResult<Finalized> {
    let inv = find_invoice(txn, &org.id, invoice_id).await?;
    let lines = lines_of(txn, &org.id, vec![inv.id.clone()])
        .await?
        .remove(&inv.id)
        .unwrap_or_default();
    let mut finalized = vec![freeze_unnumbered(txn, org, inv, &lines, now).await?];
    if let Some(job) = finalized[0].overdue_job() {
        record_in_outbox(txn, &job, finalized[0].at()).await?;
    }
    number(txn, org, &mut finalized).await?;
    Ok(finalized.remove(0))
}

/// The first half of [`freeze`], for an invoice and lines as stored:
/// everything but the number and the overdue job
/// ([`Finalized::overdue_job`]), which the caller records. The invoice is OPEN (or PAID) inside the
/// transaction, without a number until [`number`] gives it one, which must
/// happen before commit.
pub async fn freeze_unnumbered<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    inv: invoice::Model,
    lines: &[invoice_line::Model],
    now: DateTime<Utc>,
) -> WorkflowResult<Finalized> {
    if inv.status != InvoiceStatus::Draft {
        return Err(illegal(&inv, "finalize", "DRAFT"));
    }
    let currency = currency_of(&inv.currency)?;
    let computed = billing::Invoice::from_lines(
        lines.iter().map(|l| billing_line(currency, l)).collect(),
        currency,
    )
    .map_err(|e| WorkflowError::bad_input(format!("cannot finalize invoice {}: {e}", inv.id)))?;
    // Stored with microseconds on both backends: the model below is exactly
    // the row written, so it need not be read back.
    let now = now.trunc_subsecs(6);
    let total_minor = currency.to_minor_units(computed.total)?;
    let paid_now = total_minor == 0;
    let due_at = add_days(now, i64::from(org.net_terms_days))?;
    let updated = invoice::Model {
        status: if paid_now {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Open
        },
        subtotal_minor: currency.to_minor_units(computed.subtotal)?,
        total_minor,
        period_start: Some(computed.period_start),
        period_end: Some(computed.period_end),
        finalized_at: Some(now),
        due_at: Some(due_at),
        paid_at: paid_now.then_some(now),
        content_hash: Some(billing::content_hash(&computed)),
        ..inv.clone()
    };
    let result = invoice::Entity::update_many()
        .filter(invoice::Column::Id.eq(&inv.id))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Draft))
        .col_expr(
            invoice::Column::Status,
            sea_orm::sea_query::Expr::value(updated.status),
        )
        .col_expr(
            invoice::Column::SubtotalMinor,
            updated.subtotal_minor.into(),
        )
        .col_expr(invoice::Column::TotalMinor, updated.total_minor.into())
        .col_expr(invoice::Column::PeriodStart, updated.period_start.into())
        .col_expr(invoice::Column::PeriodEnd, updated.period_end.into())
        .col_expr(invoice::Column::FinalizedAt, updated.finalized_at.into())
        .col_expr(invoice::Column::DueAt, updated.due_at.into())
        .col_expr(invoice::Column::PaidAt, updated.paid_at.into())
        .col_expr(
            invoice::Column::ContentHash,
            updated.content_hash.clone().into(),
        )
        .exec(txn)
        .await?;
    if result.rows_affected != 1 {
        return Err(WorkflowError::conflict(format!(
            "invoice {} changed concurrently, retry",
            inv.id
        )));
    }
    Ok(Finalized {
        before: inv,
        after: updated,
    })
}

/// The second half of [`freeze`]: numbers `finalized`, in order, with the
/// next gapless numbers `{prefix}-{YYYY}-{seq:06}` of the year each was
/// finalized in (organization timezone): one sequence update and one
/// invoice update per year. Call it last: the sequence row stays locked
/// until commit.
pub async fn number<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    finalized: &mut [Finalized],
) -> WorkflowResult<()> {
    let tz = org_tz(org)?;
    let mut years: Vec<i32> = Vec::new();
    for f in finalized.iter() {
        let at = f.after.finalized_at.ok_or_else(|| {
            WorkflowError::Internal(format!("invoice {} is not finalized", f.after.id))
        })?;
        let year = at.with_timezone(&tz).year();
        if !years.contains(&year) {
            years.push(year);
        }
    }
    for year in years {
        let of_year: Vec<&mut Finalized> = finalized
            .iter_mut()
            .filter(|f| {
                f.after
                    .finalized_at
                    .is_some_and(|at| at.with_timezone(&tz).year() == year)
            })
            .collect();
        let count = i64::try_from(of_year.len())
            .map_err(|_| WorkflowError::Internal("too many invoices".into()))?;
        let first = take_numbers(txn, &org.id, year, count).await?;
        let mut numbers = sea_orm::sea_query::CaseStatement::new();
        let mut seqs = sea_orm::sea_query::CaseStatement::new();
        let mut ids = Vec::with_capacity(of_year.len());
        for (seq, f) in (first..).zip(of_year) {
            let text = format!("{}-{year}-{seq:06}", org.invoice_prefix);
            numbers = numbers.case(invoice::Column::Id.eq(&f.after.id), text.clone());
            seqs = seqs.case(invoice::Column::Id.eq(&f.after.id), seq);
            f.after.number = Some(text);
            f.after.number_year = Some(year);
            f.after.number_seq = Some(seq);
            ids.push(f.after.id.clone());
        }
        let expected = ids.len() as u64;
        let result = invoice::Entity::update_many()
            .col_expr(invoice::Column::Number, numbers.into())
            .col_expr(invoice::Column::NumberYear, Some(year).into())
            .col_expr(invoice::Column::NumberSeq, seqs.into())
            .filter(invoice::Column::Id.is_in(ids))
            .filter(invoice::Column::Number.is_null())
            .exec(txn)
            .await?;
        if result.rows_affected != expected {
            return Err(WorkflowError::conflict(
                "an invoice was numbered concurrently, retry".to_string(),
            ));
        }
    }
    Ok(())
}

/// `finalizeInvoice`: [`finalize`] in its own transaction.
pub async fn finalize_now(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    invoice_id: &str,
) -> WorkflowResult<invoice::Model> {
    let txn = crate::txn::begin_write(db).await?;
    let inv = finalize(&txn, org, invoice_id, org_now(org, clock), actor).await?;
    txn.commit().await?;
    Ok(inv)
}

/// What an OPEN invoice can become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Void,
    Paid { at: Option<DateTime<Utc>> },
    Uncollectible,
}

/// OPEN → VOID | PAID | UNCOLLECTIBLE. Paying the last overdue invoice of a
/// PAST_DUE subscription returns it to ACTIVE.
pub async fn settle(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    invoice_id: &str,
    settlement: Settlement,
) -> WorkflowResult<invoice::Model> {
    let now = org_now(org, clock);
    let txn = crate::txn::begin_write(db).await?;
    let inv = find_invoice(&txn, &org.id, invoice_id).await?;
    let (verb, status, action) = match settlement {
        Settlement::Void => ("void", InvoiceStatus::Void, "invoice.voided"),
        Settlement::Paid { .. } => ("mark paid", InvoiceStatus::Paid, "invoice.paid"),
        Settlement::Uncollectible => (
            "mark uncollectible",
            InvoiceStatus::Uncollectible,
            "invoice.uncollectible",
        ),
    };
    if inv.status != InvoiceStatus::Open {
        return Err(illegal(&inv, verb, "OPEN"));
    }
    let mut active = inv.clone().into_active_model();
    active.status = Set(status);
    match settlement {
        Settlement::Void => active.voided_at = Set(Some(now)),
        Settlement::Paid { at } => {
            let at = at.unwrap_or(now);
            if at > now {
                return Err(WorkflowError::bad_input(format!(
                    "paidAt {at} is in the future (now is {now})"
                )));
            }
            active.paid_at = Set(Some(at));
        }
        Settlement::Uncollectible => {}
    }
    let result = invoice::Entity::update_many()
        .set(active)
        .filter(invoice::Column::Id.eq(&inv.id))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
        .exec(&txn)
        .await?;
    if result.rows_affected != 1 {
        return Err(WorkflowError::conflict(format!(
            "invoice {} changed concurrently, retry",
            inv.id
        )));
    }
    let updated = find_invoice(&txn, &org.id, &inv.id).await?;
    // Row locks first, the audit chain last (see `audit`): a step that locks
    // the subscription and then appends cannot deadlock with this one.
    if matches!(settlement, Settlement::Paid { .. })
        && let Some(sub_id) = &inv.subscription_id
    {
        reactivate_if_settled(&txn, org, actor, sub_id, now).await?;
    }
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action,
            entity_type: "invoice",
            entity_id: &inv.id,
            before: snapshot(&inv),
            after: snapshot(&updated),
        },
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}

async fn reactivate_if_settled<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    actor: &str,
    sub_id: &str,
    now: DateTime<Utc>,
) -> WorkflowResult<()> {
    let Some(sub) = subscription::Entity::find_by_id(sub_id.to_string())
        .filter(subscription::Column::OrganizationId.eq(&org.id))
        .one(txn)
        .await?
    else {
        return Ok(());
    };
    if sub.status != SubscriptionStatus::PastDue {
        return Ok(());
    }
    let still_overdue = invoice::Entity::find()
        .filter(invoice::Column::SubscriptionId.eq(sub_id))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
        .filter(invoice::Column::DueAt.lte(now))
        .one(txn)
        .await?;
    if still_overdue.is_some() {
        return Ok(());
    }
    let mut active = sub.clone().into_active_model();
    active.status = Set(SubscriptionStatus::Active);
    active.past_due_since = Set(None);
    active.updated_at = Set(now);
    let updated = active.update(txn).await?;
    audit::append(
        txn,
        &org.id,
        actor,
        AuditEntry {
            action: "subscription.reactivated",
            entity_type: "subscription",
            entity_id: sub_id,
            before: snapshot(&sub),
            after: snapshot(&updated),
        },
        now,
    )
    .await?;
    Ok(())
}

/// An invoice computed but not stored (`upcomingInvoice`).
#[derive(Clone, Debug)]
pub struct Unsaved {
    pub invoice: invoice::Model,
    pub lines: Vec<invoice_line::Model>,
}

/// The invoice the next period close (or, in trial, the trial end) would
/// produce, computed by the billing core from persisted inputs; nothing is
/// written. `None` when the subscription is canceled or nothing is due.
pub async fn upcoming<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    subscription_id: &str,
) -> WorkflowResult<Option<Unsaved>> {
    let Some(sub) = subscription::Entity::find_by_id(subscription_id.to_string())
        .filter(subscription::Column::OrganizationId.eq(&org.id))
        .one(db)
        .await?
    else {
        return Err(WorkflowError::NotFound("subscription"));
    };
    if sub.status == SubscriptionStatus::Canceled {
        return Ok(None);
    }
    let currency = currency_of(&org.currency)?;
    let unbillable = |e: billing::MoneyError| WorkflowError::Unbillable(e.to_string());
    let mut lines = if sub.status == SubscriptionStatus::Trialing {
        let (terms, _) = terms(db, org, &sub).await?;
        let billed = crate::lifecycle::inputs::billed_lines(db, org, &sub.id, None).await?;
        billing::first_invoice(&terms, &billed, currency)?
    } else {
        let n = u32::try_from(sub.period_index)
            .map_err(|_| WorkflowError::Internal("negative period index".into()))?;
        // Exactly what the period-close step will compute.
        let (terms, meters) = terms(db, org, &sub).await?;
        crate::lifecycle::inputs::period_close_lines(db, org, &sub, (&terms, meters), n, None)
            .await?
    };
    // Pending proration lines wait for the next periodic invoice.
    for item in pending_invoice_item::Entity::find()
        .filter(pending_invoice_item::Column::SubscriptionId.eq(&sub.id))
        .filter(pending_invoice_item::Column::InvoiceId.is_null())
        .order_by_asc(pending_invoice_item::Column::Id)
        .all(db)
        .await?
    {
        lines.push(billing::InvoiceLine {
            kind: line_kind(item.kind),
            description: item.description,
            price_id: item.price_id,
            quantity: item.quantity.get(),
            unit_amount: item.unit_amount.map(Dec::get),
            amount: currency.from_minor_units(item.amount_minor),
            period: billing::Period::new(item.period_start, item.period_end),
        });
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let computed = billing::Invoice::from_lines(lines, currency)?;
    let now = sub
        .current_period_end
        .or(sub.trial_end)
        .unwrap_or(computed.period_end);
    let invoice = invoice::Model {
        id: "upcoming".into(),
        organization_id: org.id.clone(),
        customer_id: sub.customer_id.clone(),
        subscription_id: Some(sub.id.clone()),
        kind: if sub.status == SubscriptionStatus::Trialing {
            InvoiceKind::First
        } else {
            InvoiceKind::Periodic
        },
        status: InvoiceStatus::Draft,
        currency: org.currency.clone(),
        billing_key: String::new(),
        period_start: Some(computed.period_start),
        period_end: Some(computed.period_end),
        subtotal_minor: currency
            .to_minor_units(computed.subtotal)
            .map_err(unbillable)?,
        total_minor: currency
            .to_minor_units(computed.total)
            .map_err(unbillable)?,
        number: None,
        number_year: None,
        number_seq: None,
        finalize_at: None,
        created_at: now,
        finalized_at: None,
        due_at: None,
        paid_at: None,
        voided_at: None,
        content_hash: None,
    };
    let lines = computed
        .lines
        .iter()
        .enumerate()
        .map(|(position, l)| {
            Ok(invoice_line::Model {
                id: format!("upcoming-{position}"),
                organization_id: org.id.clone(),
                invoice_id: invoice.id.clone(),
                position: position as i32,
                kind: entity_line_kind(l.kind),
                description: l.description.clone(),
                price_id: l.price_id.clone(),
                quantity: Dec(l.quantity),
                unit_amount: l.unit_amount.map(Dec),
                amount_minor: currency.to_minor_units(l.amount).map_err(unbillable)?,
                period_start: l.period.start,
                period_end: l.period.end,
            })
        })
        .collect::<WorkflowResult<Vec<_>>>()?;
    Ok(Some(Unsaved { invoice, lines }))
}

/// The customer's accepted events from `complete_from` on, for these meters.
pub async fn load_usage<C: ConnectionTrait>(
    db: &C,
    org: &str,
    customer_id: &str,
    meters: std::collections::BTreeMap<String, billing::Meter>,
    complete_from: DateTime<Utc>,
) -> WorkflowResult<billing::UsageByMeter> {
    let mut usage = billing::UsageByMeter {
        meters,
        events: Default::default(),
        complete_from,
    };
    if usage.meters.is_empty() {
        return Ok(usage);
    }
    let stored_meters = entity::meter::Entity::find()
        .filter(entity::meter::Column::OrganizationId.eq(org))
        .filter(entity::meter::Column::Code.is_in(usage.meters.keys().cloned()))
        .all(db)
        .await?;
    let code_of: HashMap<String, String> =
        stored_meters.into_iter().map(|m| (m.id, m.code)).collect();
    for event in usage_event::Entity::find()
        .filter(usage_event::Column::OrganizationId.eq(org))
        .filter(usage_event::Column::CustomerId.eq(customer_id))
        .filter(usage_event::Column::MeterId.is_in(code_of.keys().cloned()))
        .filter(usage_event::Column::Timestamp.gte(complete_from))
        .all(db)
        .await?
    {
        if let Some(code) = code_of.get(&event.meter_id) {
            usage
                .events
                .entry(code.clone())
                .or_default()
                .push(billing::UsageEvent {
                    idempotency_key: event.idempotency_key,
                    timestamp: event.timestamp,
                    value: event.value.get(),
                    properties: event.properties.unwrap_or(serde_json::Value::Null),
                });
        }
    }
    Ok(usage)
}
