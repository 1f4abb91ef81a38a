//! Invoice reads and state transitions:
//! `DRAFT → OPEN → PAID | VOID | UNCOLLECTIBLE` (a zero-total draft goes
//! straight to PAID at finalization).
//!
//! [`finalize`] is the one finalization routine: the API's
//! `finalizeInvoice` and the worker's finalization step both call it inside
//! their own transaction. Every transition is a compare-and-set on the
//! current status, so a racing second caller changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Utc};
use entity::{
    Dec, InvoiceKind, InvoiceLineKind, InvoiceStatus, SubscriptionStatus, invoice, invoice_line,
    organization, pending_invoice_item, subscription,
};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, Set, Statement,
};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now, stored};
use crate::error::{WorkflowError, WorkflowResult};
use crate::jobs::{Job, record_in_outbox};
use crate::pagination::{self, Page};
use crate::subscriptions::{org_tz, terms};
use crate::tenancy::add_days;
use crate::txn::placeholder;

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
        self.entry(Some(&self.before))
    }

    /// Its audit entry when it is stored finalized by the step that composed
    /// it (`invoice.finalized`, no `before`): the draft it was finalized from
    /// existed only in memory, so the trail records one event, not a draft
    /// nobody could see and then its finalization.
    pub fn audited_as_issued(&self) -> AuditEntry<'_> {
        self.entry(None)
    }

    fn entry(&self, before: Option<&invoice::Model>) -> AuditEntry<'_> {
        AuditEntry {
            action: "invoice.finalized",
            entity_type: "invoice",
            entity_id: &self.after.id,
            before: before.and_then(snapshot),
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
/// ([`Finalized::overdue_job`]), which the caller records. The invoice is
/// OPEN (or PAID) inside the transaction, without a number until [`number`]
/// gives it one, which must happen before commit.
async fn freeze_unnumbered<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    inv: invoice::Model,
    lines: &[invoice_line::Model],
    now: DateTime<Utc>,
) -> WorkflowResult<Finalized> {
    let finalized = finalized_unnumbered(org, inv, lines, now)?;
    let updated = &finalized.after;
    let result = invoice::Entity::update_many()
        .filter(invoice::Column::Id.eq(&updated.id))
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
            updated.id
        )));
    }
    Ok(finalized)
}

/// What finalizing the DRAFT `inv` with `lines` at `now` makes of it, before
/// its number, computed without writing: totals and content hash from the
/// lines, `dueAt`, OPEN or (at total zero) PAID. [`freeze_unnumbered`]
/// writes it over a stored draft; a step that finalizes a draft it has not
/// stored yet writes it as it is.
pub fn finalized_unnumbered(
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
    let now = stored(now);
    let total_minor = currency.to_minor_units(computed.total)?;
    let paid_now = total_minor == 0;
    let due_at = add_days(now, i64::from(org.net_terms_days))?;
    let after = invoice::Model {
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
    Ok(Finalized { before: inv, after })
}

/// The second half of [`freeze`]: numbers `finalized`, in order, with the
/// next gapless numbers `{prefix}-{YYYY}-{seq:06}` of the year each was
/// finalized in (organization timezone), taken from the `invoice_sequences`
/// row of `(org, year)` by an atomic upsert inside the caller's transaction:
/// the row stays locked until commit, so numbers are gapless and never
/// reused. One statement per year on PostgreSQL (the upsert and the update of
/// the invoices together), two on SQLite. Call it last: everything after it
/// holds the organization's sequence.
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
        let mut of_year: Vec<&mut Finalized> = finalized
            .iter_mut()
            .filter(|f| {
                f.after
                    .finalized_at
                    .is_some_and(|at| at.with_timezone(&tz).year() == year)
            })
            .collect();
        let ids: Vec<&str> = of_year.iter().map(|f| f.after.id.as_str()).collect();
        let mut numbers = take_numbers(txn, org, year, &ids).await?;
        for f in of_year.iter_mut() {
            let (number, seq) = numbers.remove(&f.after.id).ok_or_else(|| {
                WorkflowError::conflict(format!(
                    "invoice {} was numbered concurrently, retry",
                    f.after.id
                ))
            })?;
            f.after.number = Some(number);
            f.after.number_year = Some(year);
            f.after.number_seq = Some(seq);
        }
    }
    Ok(())
}

/// Takes the next `ids.len()` numbers of `(org, year)` and writes them on
/// the unnumbered invoices `ids`, in order; returns each invoice's number
/// and sequence. The number's text is made here, in SQL, and only here.
async fn take_numbers<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    year: i32,
    ids: &[&str],
) -> WorkflowResult<HashMap<String, (String, i64)>> {
    let backend = txn.get_database_backend();
    let count = i64::try_from(ids.len())
        .map_err(|_| WorkflowError::Internal("too many invoices".into()))?;
    let p = |n: usize| placeholder(backend, n);
    let upsert = format!(
        "INSERT INTO invoice_sequences (organization_id, year, last_seq) VALUES ({org}, {year}, {count}) \
         ON CONFLICT (organization_id, year) DO UPDATE SET last_seq = invoice_sequences.last_seq + {count} \
         RETURNING last_seq - {count} AS base",
        org = p(1),
        year = p(2),
        count = p(3),
    );
    let mut values: Vec<sea_orm::Value> = vec![
        org.id.clone().into(),
        year.into(),
        count.into(),
        org.invoice_prefix.clone().into(),
    ];
    // Which invoices, and each one's place in the range. On PostgreSQL the
    // ids go as one list that the primary key is searched with: joined to a
    // VALUES list, the planner, which counts no unnumbered invoice in its
    // statistics, scanned all of them for every batch (under the lock, and
    // growing with the table).
    let (with, base, from, target, ordinal, seq_text) = match backend {
        DbBackend::Postgres => {
            if ids.iter().any(|id| id.contains(',')) {
                return Err(WorkflowError::Internal(
                    "an invoice id holds a comma".into(),
                ));
            }
            values.push(ids.join(",").into());
            let list = format!("string_to_array({}, ',')", p(5));
            (
                format!("WITH taken AS ({upsert}) "),
                "taken.base".to_string(),
                "taken".to_string(),
                format!("invoices.id = ANY({list})"),
                format!("array_position({list}, invoices.id::text)"),
                "lpad(SEQ::text, greatest(6, length(SEQ::text)), '0')",
            )
        }
        _ => {
            // SQLite has no data-modifying WITH: the upsert goes first.
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    upsert,
                    values[..3].to_vec(),
                ))
                .await?
                .ok_or_else(|| {
                    WorkflowError::Internal("invoice sequence returned no row".into())
                })?;
            let base: i64 = row.try_get("", "base")?;
            let mut rows = Vec::with_capacity(ids.len());
            for (ordinal, id) in (1_i64..).zip(ids) {
                rows.push(format!(
                    "({}, {})",
                    p(values.len() + 1),
                    p(values.len() + 2)
                ));
                values.push(id.to_string().into());
                values.push(ordinal.into());
            }
            (
                String::new(),
                base.to_string(),
                format!("(VALUES {}) AS v", rows.join(", ")),
                "invoices.id = v.column1".to_string(),
                "v.column2".to_string(),
                "printf('%06d', SEQ)",
            )
        }
    };
    let seq = format!("({base} + {ordinal})");
    let sql = format!(
        "{with}UPDATE invoices SET number_year = {year}, number_seq = {seq}, \
         number = {prefix} || '-' || {year_text} || '-' || {seq_text} \
         FROM {from} \
         WHERE {target} AND invoices.organization_id = {org} AND invoices.number IS NULL \
         RETURNING invoices.id, invoices.number, invoices.number_seq",
        year = p(2),
        prefix = p(4),
        year_text = match backend {
            DbBackend::Postgres => format!("{}::text", p(2)),
            _ => p(2),
        },
        seq_text = seq_text.replace("SEQ", &seq),
        org = p(1),
    );
    let numbered = txn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    numbered
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<String>("", "id")?,
                (
                    row.try_get::<String>("", "number")?,
                    row.try_get::<i64>("", "number_seq")?,
                ),
            ))
        })
        .collect()
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
