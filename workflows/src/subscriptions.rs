//! Subscriptions: the API records intent (create, change, cancel) in one
//! transaction each, with the history row, the audit event and the outbox
//! job that makes the workers carry it out. No invoice is written here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use entity::{
    BillingAnchor, ChangeTiming, ProrationBehavior, SubscriptionChangeKind, SubscriptionStatus,
    customer, organization, plan, plan_version, subscription, subscription_change,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use crate::audit::{self, AuditEntry, snapshot};
use crate::catalog::{
    billing_interval, billing_meter, billing_price, prices_of_versions, version_at,
};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::idempotency;
use crate::ids::new_id;
use crate::jobs::{Job, record_in_outbox};
use crate::pagination::{self, Page};
use crate::tenancy::add_days;

/// A subscription to create.
#[derive(Clone, Debug)]
pub struct NewSubscription {
    pub customer_id: String,
    pub plan_id: String,
    pub quantity: i32,
    pub trial_days: Option<i32>,
    pub billing_anchor: BillingAnchor,
    pub start_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
}

/// A plan or quantity change.
#[derive(Clone, Debug)]
pub struct PlanChange {
    pub subscription_id: String,
    pub plan_id: String,
    pub quantity: Option<i32>,
    pub proration_behavior: ProrationBehavior,
    pub timing: ChangeTiming,
    pub idempotency_key: Option<String>,
}

/// A cancellation.
#[derive(Clone, Debug)]
pub struct Cancellation {
    pub subscription_id: String,
    pub at_period_end: bool,
    pub proration_behavior: ProrationBehavior,
    pub idempotency_key: Option<String>,
}

const MAX_QUANTITY: i32 = 1_000_000;

fn check_quantity(quantity: i32) -> WorkflowResult<()> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(WorkflowError::bad_input(format!(
            "quantity must be between 1 and {MAX_QUANTITY}, got {quantity}"
        )));
    }
    Ok(())
}

/// The organization's timezone (validated when the organization was created).
pub fn org_tz(org: &organization::Model) -> WorkflowResult<chrono_tz::Tz> {
    org.timezone
        .parse()
        .map_err(|_| WorkflowError::Internal(format!("stored timezone {:?}", org.timezone)))
}

/// The period schedule of a subscription on `plan`, starting at `anchor`.
pub fn schedule(
    org: &organization::Model,
    plan: &plan::Model,
    anchor_kind: BillingAnchor,
    anchor: DateTime<Utc>,
) -> WorkflowResult<billing::PeriodSchedule> {
    let tz = org_tz(org)?;
    let count = u32::try_from(plan.interval_count)
        .map_err(|_| WorkflowError::Internal("negative intervalCount".into()))?;
    let cadence = billing::Cadence::new(billing_interval(plan.interval), count);
    Ok(match anchor_kind {
        BillingAnchor::Anniversary => billing::PeriodSchedule::anniversary(anchor, cadence, tz),
        BillingAnchor::Calendar => billing::PeriodSchedule::calendar(anchor, cadence, tz),
    })
}

fn period_error(e: billing::PeriodError) -> WorkflowError {
    WorkflowError::bad_input(e.to_string())
}

async fn find_subscription<C: ConnectionTrait>(
    db: &C,
    org: &str,
    id: &str,
) -> WorkflowResult<subscription::Model> {
    get_subscription(db, org, id)
        .await?
        .ok_or(WorkflowError::NotFound("subscription"))
}

async fn find_plan<C: ConnectionTrait>(db: &C, org: &str, id: &str) -> WorkflowResult<plan::Model> {
    plan::Entity::find_by_id(id.to_string())
        .filter(plan::Column::OrganizationId.eq(org))
        .one(db)
        .await?
        .ok_or(WorkflowError::NotFound("plan"))
}

/// A period's flat fees at `quantity` must fit an invoice (64-bit minor
/// units of the organization's currency) under every version of `plan`, or
/// no step could ever invoice the subscription: refused up front instead.
async fn check_fees_fit<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    plan: &plan::Model,
    quantity: i32,
) -> WorkflowResult<()> {
    let currency = billing::Currency::parse(&org.currency)?;
    let version_ids: Vec<String> = plan_version::Entity::find()
        .filter(plan_version::Column::PlanId.eq(&plan.id))
        .all(db)
        .await?
        .into_iter()
        .map(|v| v.id)
        .collect();
    let too_much = || {
        WorkflowError::bad_input(format!(
            "plan {} at quantity {quantity} charges more per period than an invoice can hold ({} {currency})",
            plan.code,
            currency.from_minor_units(i64::MAX)
        ))
    };
    for views in prices_of_versions(db, &version_ids).await?.values() {
        let mut total: i64 = 0;
        for view in views
            .iter()
            .filter(|v| v.price.model == entity::PriceModel::Flat)
        {
            let amount = billing_price(view)
                .amount_for(rust_decimal::Decimal::from(quantity))
                .map_err(|_| too_much())?;
            let minor = currency
                .to_minor_units(currency.round(amount))
                .map_err(|_| too_much())?;
            total = total.checked_add(minor).ok_or_else(too_much)?;
        }
    }
    Ok(())
}

/// Creates a subscription: TRIALING until `trialEnd` when it has a trial,
/// else ACTIVE with period 0 open; the worker invoices it (outbox job).
pub async fn create_subscription(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    input: NewSubscription,
) -> WorkflowResult<subscription::Model> {
    check_quantity(input.quantity)?;
    if let Some(days) = input.trial_days
        && !(0..=3650).contains(&days)
    {
        return Err(WorkflowError::bad_input(format!(
            "trialDays must be between 0 and 3650, got {days}"
        )));
    }
    let request = json!({
        "customerId": input.customer_id,
        "planId": input.plan_id,
        "quantity": input.quantity,
        "trialDays": input.trial_days,
        "billingAnchor": input.billing_anchor.as_str(),
        "startAt": input.start_at.map(|t| t.to_rfc3339()),
    });
    let hash = idempotency::request_hash(&request);
    const OP: &str = "createSubscription";
    let txn = crate::txn::begin_write(db).await?;
    if let Some(key) = &input.idempotency_key
        && let Some(id) = idempotency::replayed(&txn, &org.id, key, OP, &hash).await?
    {
        return find_subscription(&txn, &org.id, &id).await;
    }
    let customer = customer::Entity::find_by_id(input.customer_id.clone())
        .filter(customer::Column::OrganizationId.eq(&org.id))
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("customer"))?;
    let plan = find_plan(&txn, &org.id, &input.plan_id).await?;
    check_fees_fit(&txn, org, &plan, input.quantity).await?;
    let now = org_now(org, clock);
    let start = input.start_at.unwrap_or(now).trunc_subsecs(6);
    let trial_days = input.trial_days.unwrap_or(plan.trial_days);
    let trial_end = if trial_days > 0 {
        Some(add_days(start, i64::from(trial_days))?)
    } else {
        None
    };
    let anchor = trial_end.unwrap_or(start);
    let (status, current) = match trial_end {
        Some(_) => (SubscriptionStatus::Trialing, None),
        None => {
            let schedule = schedule(org, &plan, input.billing_anchor, anchor)?;
            (
                SubscriptionStatus::Active,
                Some(schedule.period(0).map_err(period_error)?),
            )
        }
    };
    let sub = subscription::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id.clone()),
        customer_id: Set(customer.id.clone()),
        plan_id: Set(plan.id.clone()),
        quantity: Set(input.quantity),
        status: Set(status),
        billing_anchor: Set(input.billing_anchor),
        started_at: Set(start),
        trial_end: Set(trial_end),
        period_anchor: Set(anchor),
        period_index: Set(0),
        current_period_start: Set(current.map(|p| p.start)),
        current_period_end: Set(current.map(|p| p.end)),
        cancel_at_period_end: Set(false),
        canceled_at: Set(None),
        past_due_since: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    insert_change(
        &txn,
        &sub,
        SubscriptionChangeKind::Created,
        start,
        Some(start),
        None,
        None,
        now,
    )
    .await?;
    let job = match trial_end {
        Some(end) => Job::trial_expiry(&org.id, &sub.id, end),
        None => Job::subscription_start(&org.id, &sub.id, start),
    };
    record_in_outbox(&txn, &job, now).await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "subscription.created",
            entity_type: "subscription",
            entity_id: &sub.id,
            before: None,
            after: snapshot(&sub),
        },
        now,
    )
    .await?;
    if let Some(key) = &input.idempotency_key {
        idempotency::record(&txn, &org.id, key, OP, &hash, &sub.id, now).await?;
    }
    txn.commit().await?;
    Ok(sub)
}

#[allow(clippy::too_many_arguments)]
async fn insert_change<C: ConnectionTrait>(
    txn: &C,
    sub: &subscription::Model,
    kind: SubscriptionChangeKind,
    effective_at: DateTime<Utc>,
    applied_at: Option<DateTime<Utc>>,
    proration_behavior: Option<ProrationBehavior>,
    timing: Option<ChangeTiming>,
    now: DateTime<Utc>,
) -> WorkflowResult<subscription_change::Model> {
    Ok(subscription_change::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(sub.organization_id.clone()),
        subscription_id: Set(sub.id.clone()),
        kind: Set(kind),
        plan_id: Set(sub.plan_id.clone()),
        quantity: Set(sub.quantity),
        effective_at: Set(effective_at),
        proration_behavior: Set(proration_behavior),
        timing: Set(timing),
        applied_at: Set(applied_at),
        created_at: Set(now),
    }
    .insert(txn)
    .await?)
}

fn refuse_canceled(sub: &subscription::Model) -> WorkflowResult<()> {
    if sub.status == SubscriptionStatus::Canceled {
        return Err(WorkflowError::bad_input(format!(
            "subscription {} is CANCELED, which is final",
            sub.id
        )));
    }
    Ok(())
}

/// Changes plan and/or quantity, now (with a proration job unless NONE) or
/// at the end of the current period (recorded; the period close applies it).
pub async fn change_plan(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    input: PlanChange,
) -> WorkflowResult<subscription::Model> {
    if let Some(q) = input.quantity {
        check_quantity(q)?;
    }
    let request = json!({
        "subscriptionId": input.subscription_id,
        "planId": input.plan_id,
        "quantity": input.quantity,
        "prorationBehavior": input.proration_behavior.as_str(),
        "timing": input.timing.as_str(),
    });
    let hash = idempotency::request_hash(&request);
    const OP: &str = "changeSubscriptionPlan";
    let txn = crate::txn::begin_write(db).await?;
    if let Some(key) = &input.idempotency_key
        && let Some(id) = idempotency::replayed(&txn, &org.id, key, OP, &hash).await?
    {
        return find_subscription(&txn, &org.id, &id).await;
    }
    let sub = find_subscription(&txn, &org.id, &input.subscription_id).await?;
    refuse_canceled(&sub)?;
    let current_plan = find_plan(&txn, &org.id, &sub.plan_id).await?;
    let new_plan = find_plan(&txn, &org.id, &input.plan_id).await?;
    if (new_plan.interval, new_plan.interval_count)
        != (current_plan.interval, current_plan.interval_count)
    {
        return Err(WorkflowError::bad_input(format!(
            "plan {} bills every {} {}, the subscription every {} {}: a change must keep the billing interval",
            new_plan.code,
            new_plan.interval_count,
            new_plan.interval,
            current_plan.interval_count,
            current_plan.interval
        )));
    }
    let quantity = input.quantity.unwrap_or(sub.quantity);
    check_fees_fit(&txn, org, &new_plan, quantity).await?;
    let kind = if new_plan.id != sub.plan_id {
        SubscriptionChangeKind::PlanChange
    } else if quantity != sub.quantity {
        SubscriptionChangeKind::QuantityChange
    } else {
        return Err(WorkflowError::bad_input(
            "the subscription already has this plan and quantity",
        ));
    };
    let now = org_now(org, clock);
    let mut target = sub.clone();
    target.plan_id = new_plan.id.clone();
    target.quantity = quantity;
    let updated = match input.timing {
        ChangeTiming::Immediately => {
            let mut active = sub.clone().into_active_model();
            active.plan_id = Set(new_plan.id.clone());
            active.quantity = Set(quantity);
            active.updated_at = Set(now);
            let updated = active.update(&txn).await?;
            let change = insert_change(
                &txn,
                &updated,
                kind,
                now,
                Some(now),
                Some(input.proration_behavior),
                Some(input.timing),
                now,
            )
            .await?;
            if input.proration_behavior != ProrationBehavior::None {
                record_in_outbox(
                    &txn,
                    &Job::proration(&org.id, &sub.id, &change.id, now),
                    now,
                )
                .await?;
            }
            updated
        }
        ChangeTiming::PeriodEnd => {
            let at = sub.current_period_end.or(sub.trial_end).ok_or_else(|| {
                WorkflowError::bad_input("the subscription has no current period to end")
            })?;
            insert_change(
                &txn,
                &target,
                kind,
                at,
                None,
                Some(input.proration_behavior),
                Some(input.timing),
                now,
            )
            .await?;
            sub.clone()
        }
    };
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: match input.timing {
                ChangeTiming::Immediately => "subscription.plan_changed",
                ChangeTiming::PeriodEnd => "subscription.plan_change_scheduled",
            },
            entity_type: "subscription",
            entity_id: &sub.id,
            before: snapshot(&sub),
            after: snapshot(&target),
        },
        now,
    )
    .await?;
    if let Some(key) = &input.idempotency_key {
        idempotency::record(&txn, &org.id, key, OP, &hash, &sub.id, now).await?;
    }
    txn.commit().await?;
    Ok(updated)
}

/// Cancels at period end (flag) or now (CANCELED, final invoice via a job).
pub async fn cancel(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    input: Cancellation,
) -> WorkflowResult<subscription::Model> {
    let request = json!({
        "subscriptionId": input.subscription_id,
        "atPeriodEnd": input.at_period_end,
        "prorationBehavior": input.proration_behavior.as_str(),
    });
    let hash = idempotency::request_hash(&request);
    const OP: &str = "cancelSubscription";
    let txn = crate::txn::begin_write(db).await?;
    if let Some(key) = &input.idempotency_key
        && let Some(id) = idempotency::replayed(&txn, &org.id, key, OP, &hash).await?
    {
        return find_subscription(&txn, &org.id, &id).await;
    }
    let sub = find_subscription(&txn, &org.id, &input.subscription_id).await?;
    refuse_canceled(&sub)?;
    let now = org_now(org, clock);
    let mut active = sub.clone().into_active_model();
    active.updated_at = Set(now);
    let action = if input.at_period_end {
        active.cancel_at_period_end = Set(true);
        "subscription.cancel_scheduled"
    } else {
        active.status = Set(SubscriptionStatus::Canceled);
        active.canceled_at = Set(Some(now));
        active.cancel_at_period_end = Set(false);
        "subscription.canceled"
    };
    let updated = active.update(&txn).await?;
    if !input.at_period_end {
        let change = insert_change(
            &txn,
            &updated,
            SubscriptionChangeKind::Cancel,
            now,
            Some(now),
            Some(input.proration_behavior),
            Some(ChangeTiming::Immediately),
            now,
        )
        .await?;
        // The final invoice (usage so far, credits per prorationBehavior).
        record_in_outbox(
            &txn,
            &Job::proration(&org.id, &sub.id, &change.id, now),
            now,
        )
        .await?;
    }
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action,
            entity_type: "subscription",
            entity_id: &sub.id,
            before: snapshot(&sub),
            after: snapshot(&updated),
        },
        now,
    )
    .await?;
    if let Some(key) = &input.idempotency_key {
        idempotency::record(&txn, &org.id, key, OP, &hash, &sub.id, now).await?;
    }
    txn.commit().await?;
    Ok(updated)
}

pub async fn get_subscription<C: ConnectionTrait>(
    db: &C,
    org: &str,
    id: &str,
) -> WorkflowResult<Option<subscription::Model>> {
    Ok(subscription::Entity::find_by_id(id.to_string())
        .filter(subscription::Column::OrganizationId.eq(org))
        .one(db)
        .await?)
}

/// Filters of the subscription list.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionFilter {
    pub status: Option<SubscriptionStatus>,
    pub customer_id: Option<String>,
}

pub async fn list_subscriptions<C: ConnectionTrait>(
    db: &C,
    org: &str,
    filter: SubscriptionFilter,
    first: u64,
    after: Option<String>,
) -> WorkflowResult<Page<subscription::Model>> {
    let mut select =
        subscription::Entity::find().filter(subscription::Column::OrganizationId.eq(org));
    if let Some(status) = filter.status {
        select = select.filter(subscription::Column::Status.eq(status));
    }
    if let Some(customer) = filter.customer_id {
        select = select.filter(subscription::Column::CustomerId.eq(customer));
    }
    Ok(pagination::page(db, select, subscription::Column::Id, first, after).await?)
}

/// Subscriptions of these customers, grouped by customer id.
pub async fn subscriptions_of_customers<C: ConnectionTrait>(
    db: &C,
    org: &str,
    customer_ids: Vec<String>,
) -> WorkflowResult<HashMap<String, Vec<subscription::Model>>> {
    if customer_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let subscriptions = subscription::Entity::find()
        .filter(subscription::Column::OrganizationId.eq(org))
        .filter(subscription::Column::CustomerId.is_in(customer_ids))
        .order_by_asc(subscription::Column::Id)
        .all(db)
        .await?;
    Ok(crate::pagination::group_by_parent(subscriptions, |s| {
        Some(&s.customer_id)
    }))
}

/// The plans a transaction has read, with their versions and prices, so a
/// step closing many subscriptions of the same few plans reads each plan
/// once. Valid only inside the transaction that filled it: versions can be
/// added to a plan later, and another transaction would not see them.
#[derive(Default)]
pub struct Plans {
    plans: HashMap<String, plan::Model>,
    versions: HashMap<String, Vec<plan_version::Model>>,
    prices: BTreeMap<String, Vec<crate::catalog::PriceView>>,
}

impl Plans {
    async fn plan<C: ConnectionTrait>(
        &mut self,
        db: &C,
        org: &str,
        id: &str,
    ) -> WorkflowResult<plan::Model> {
        if let Some(plan) = self.plans.get(id) {
            return Ok(plan.clone());
        }
        let plan = find_plan(db, org, id).await?;
        self.plans.insert(id.to_string(), plan.clone());
        Ok(plan)
    }

    /// Reads the versions and prices of those of `plan_ids` not read yet.
    async fn read_versions<C: ConnectionTrait>(
        &mut self,
        db: &C,
        plan_ids: &BTreeSet<String>,
    ) -> WorkflowResult<()> {
        let missing: Vec<String> = plan_ids
            .iter()
            .filter(|id| !self.versions.contains_key(*id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let versions = plan_version::Entity::find()
            .filter(plan_version::Column::PlanId.is_in(missing.iter().cloned()))
            .all(db)
            .await?;
        let version_ids: Vec<String> = versions.iter().map(|v| v.id.clone()).collect();
        self.prices
            .extend(prices_of_versions(db, &version_ids).await?);
        for id in missing {
            self.versions.entry(id).or_default();
        }
        for v in versions {
            self.versions.entry(v.plan_id.clone()).or_default().push(v);
        }
        Ok(())
    }
}

/// Everything billing needs about a subscription: its schedule, its phases
/// (plan versions × recorded changes, including a pending PERIOD_END change)
/// and its end of service, plus the meters its prices use.
pub async fn terms<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    sub: &subscription::Model,
) -> WorkflowResult<(billing::SubscriptionTerms, BTreeMap<String, billing::Meter>)> {
    terms_with(db, org, sub, &mut Plans::default()).await
}

/// [`terms`], reading plans through `plans` (see [`Plans`]).
pub async fn terms_with<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    plans: &mut Plans,
) -> WorkflowResult<(billing::SubscriptionTerms, BTreeMap<String, billing::Meter>)> {
    let changes = changes_of(db, vec![sub.id.clone()])
        .await?
        .remove(&sub.id)
        .unwrap_or_default();
    terms_given(db, org, sub, &changes, plans).await
}

/// The plan and quantity changes of these subscriptions (cancels aside),
/// by subscription, in the order [`terms_given`] takes them: by effective
/// instant, then id.
pub async fn changes_of<C: ConnectionTrait>(
    db: &C,
    subscription_ids: Vec<String>,
) -> WorkflowResult<HashMap<String, Vec<subscription_change::Model>>> {
    let changes = subscription_change::Entity::find()
        .filter(subscription_change::Column::SubscriptionId.is_in(subscription_ids))
        .filter(subscription_change::Column::Kind.ne(SubscriptionChangeKind::Cancel))
        .order_by_asc(subscription_change::Column::EffectiveAt)
        .order_by_asc(subscription_change::Column::Id)
        .all(db)
        .await?;
    Ok(crate::pagination::group_by_parent(changes, |c| {
        Some(c.subscription_id.as_str())
    }))
}

/// [`terms_with`] given the subscription's changes ([`changes_of`]).
pub async fn terms_given<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    changes: &[subscription_change::Model],
    plans: &mut Plans,
) -> WorkflowResult<(billing::SubscriptionTerms, BTreeMap<String, billing::Meter>)> {
    let plan = plans.plan(db, &org.id, &sub.plan_id).await?;
    let schedule = schedule(org, &plan, sub.billing_anchor, sub.period_anchor)?;
    let mut plan_ids: BTreeSet<String> = changes.iter().map(|c| c.plan_id.clone()).collect();
    plan_ids.insert(sub.plan_id.clone());
    plans.read_versions(db, &plan_ids).await?;
    let versions_by_plan = &plans.versions;
    let versions = plan_ids
        .iter()
        .filter_map(|id| versions_by_plan.get(id))
        .flatten();
    let prices = &plans.prices;

    let start = schedule.start;
    let mut instants: BTreeSet<DateTime<Utc>> = BTreeSet::new();
    instants.insert(start);
    instants.extend(
        changes
            .iter()
            .map(|c| c.effective_at)
            .filter(|t| *t > start),
    );
    instants.extend(versions.map(|v| v.effective_from).filter(|t| *t > start));

    let mut meters = BTreeMap::new();
    let mut phases: Vec<billing::Phase> = Vec::new();
    for at in instants {
        let state = changes
            .iter()
            .rev()
            .find(|c| c.effective_at <= at)
            .or_else(|| changes.first());
        let (plan_id, quantity) = match state {
            Some(c) => (c.plan_id.as_str(), c.quantity),
            None => (sub.plan_id.as_str(), sub.quantity),
        };
        let Some(version) = versions_by_plan
            .get(plan_id)
            .and_then(|vs| version_at(vs, at))
        else {
            continue;
        };
        let views = prices.get(&version.id).map_or(&[][..], Vec::as_slice);
        for view in views {
            if let Some(meter) = &view.meter {
                meters.insert(meter.code.clone(), billing_meter(meter));
            }
        }
        let phase = billing::Phase {
            from: at,
            prices: views.iter().map(billing_price).collect(),
            quantity: u32::try_from(quantity)
                .map_err(|_| WorkflowError::Internal("negative quantity".into()))?,
        };
        let same_as_last = phases
            .last()
            .is_some_and(|p| p.prices == phase.prices && p.quantity == phase.quantity);
        if !same_as_last {
            phases.push(phase);
        }
    }
    let ends_at = match sub.status {
        SubscriptionStatus::Canceled => sub.canceled_at,
        _ if sub.cancel_at_period_end => sub.current_period_end.or(sub.trial_end),
        _ => None,
    };
    Ok((
        billing::SubscriptionTerms {
            schedule,
            phases,
            ends_at,
        },
        meters,
    ))
}
