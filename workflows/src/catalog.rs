//! The catalog: meters, plans, plan versions and their prices.
//!
//! Prices are validated by the billing core ([`billing::Price::validate`])
//! before anything is written; a plan's prices live on a version, and a new
//! version takes effect from a given instant (never in the past, never before
//! the previous version), so periods already billed are never re-priced.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use entity::{
    Aggregation, BillingTiming, Dec, Interval, PriceModel, meter, organization, plan, plan_version,
    price, price_tier,
};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::text::{MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, check_length, check_required};

/// A meter to create.
#[derive(Clone, Debug)]
pub struct MeterSpec {
    pub code: String,
    pub name: String,
    pub aggregation: Aggregation,
    pub unique_property: Option<String>,
}

/// One tier of a price to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierSpec {
    pub up_to: Option<Decimal>,
    pub unit_amount: Decimal,
    pub flat_amount: Decimal,
}

/// A price to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceSpec {
    pub model: PriceModel,
    pub timing: BillingTiming,
    pub meter_code: Option<String>,
    pub unit_amount: Option<Decimal>,
    pub package_size: Option<Decimal>,
    pub tiers: Option<Vec<TierSpec>>,
    pub description: Option<String>,
}

/// A plan to create.
#[derive(Clone, Debug)]
pub struct PlanSpec {
    pub code: String,
    pub name: String,
    pub interval: Interval,
    pub interval_count: i32,
    pub trial_days: i32,
    pub prices: Vec<PriceSpec>,
}

/// A stored price with its tiers and meter.
#[derive(Clone, Debug)]
pub struct PriceView {
    pub price: price::Model,
    pub tiers: Vec<price_tier::Model>,
    pub meter: Option<meter::Model>,
}

/// A plan with the version in force at some instant and that version's prices.
#[derive(Clone, Debug)]
pub struct PlanView {
    pub plan: plan::Model,
    pub version: plan_version::Model,
    pub prices: Vec<PriceView>,
}

pub fn billing_model(model: PriceModel) -> billing::PriceModel {
    match model {
        PriceModel::Flat => billing::PriceModel::Flat,
        PriceModel::PerUnit => billing::PriceModel::PerUnit,
        PriceModel::Graduated => billing::PriceModel::Graduated,
        PriceModel::Volume => billing::PriceModel::Volume,
        PriceModel::Package => billing::PriceModel::Package,
    }
}

pub fn billing_timing(timing: BillingTiming) -> billing::BillingTiming {
    match timing {
        BillingTiming::InAdvance => billing::BillingTiming::InAdvance,
        BillingTiming::InArrears => billing::BillingTiming::InArrears,
    }
}

pub fn billing_aggregation(aggregation: Aggregation) -> billing::Aggregation {
    match aggregation {
        Aggregation::Count => billing::Aggregation::Count,
        Aggregation::Sum => billing::Aggregation::Sum,
        Aggregation::Max => billing::Aggregation::Max,
        Aggregation::Last => billing::Aggregation::Last,
        Aggregation::UniqueCount => billing::Aggregation::UniqueCount,
    }
}

pub fn billing_interval(interval: Interval) -> billing::Interval {
    match interval {
        Interval::Day => billing::Interval::Day,
        Interval::Week => billing::Interval::Week,
        Interval::Month => billing::Interval::Month,
        Interval::Year => billing::Interval::Year,
    }
}

/// The billing core's view of a meter.
pub fn billing_meter(meter: &meter::Model) -> billing::Meter {
    billing::Meter {
        code: meter.code.clone(),
        aggregation: billing_aggregation(meter.aggregation),
        unique_property: meter.unique_property.clone(),
    }
}

/// The billing core's view of a stored price.
pub fn billing_price(view: &PriceView) -> billing::Price {
    billing::Price {
        id: view.price.id.clone(),
        model: billing_model(view.price.model),
        timing: billing_timing(view.price.timing),
        meter_code: view.meter.as_ref().map(|m| m.code.clone()),
        unit_amount: view.price.unit_amount.map(Dec::get),
        package_size: view.price.package_size.map(Dec::get),
        tiers: view
            .tiers
            .iter()
            .map(|t| billing::Tier {
                up_to: t.up_to.map(Dec::get),
                unit_amount: t.unit_amount.get(),
                flat_amount: t.flat_amount.get(),
            })
            .collect(),
        description: view.price.description.clone(),
    }
}

fn spec_to_billing(label: String, spec: &PriceSpec) -> billing::Price {
    billing::Price {
        id: label,
        model: billing_model(spec.model),
        timing: billing_timing(spec.timing),
        meter_code: spec.meter_code.clone(),
        unit_amount: spec.unit_amount,
        package_size: spec.package_size,
        tiers: spec
            .tiers
            .iter()
            .flatten()
            .map(|t| billing::Tier {
                up_to: t.up_to,
                unit_amount: t.unit_amount,
                flat_amount: t.flat_amount,
            })
            .collect(),
        description: spec.description.clone(),
    }
}

/// Creates a meter; its code is unique in the organization.
pub async fn create_meter(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    spec: MeterSpec,
) -> WorkflowResult<meter::Model> {
    check_required("code", &spec.code, MAX_NAME_CHARS)?;
    check_length("name", &spec.name, MAX_NAME_CHARS)?;
    if let Some(property) = &spec.unique_property {
        check_length("uniqueProperty", property, MAX_NAME_CHARS)?;
    }
    let unique_property = spec.unique_property.filter(|p| !p.is_empty());
    if spec.aggregation == Aggregation::UniqueCount && unique_property.is_none() {
        return Err(WorkflowError::bad_input(
            "a UNIQUE_COUNT meter needs a uniqueProperty",
        ));
    }
    let txn = crate::txn::begin_write(db).await?;
    let exists = meter::Entity::find()
        .filter(meter::Column::OrganizationId.eq(&org.id))
        .filter(meter::Column::Code.eq(&spec.code))
        .one(&txn)
        .await?;
    if exists.is_some() {
        return Err(WorkflowError::conflict(format!(
            "a meter with code {:?} already exists",
            spec.code
        )));
    }
    let now = org_now(org, clock);
    let model = meter::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id.clone()),
        code: Set(spec.code),
        name: Set(spec.name),
        aggregation: Set(spec.aggregation),
        unique_property: Set(unique_property),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "meter.created",
            entity_type: "meter",
            entity_id: &model.id,
            before: None,
            after: snapshot(&model),
        },
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(model)
}

pub async fn list_meters<C: ConnectionTrait>(
    db: &C,
    org: &str,
) -> WorkflowResult<Vec<meter::Model>> {
    Ok(meter::Entity::find()
        .filter(meter::Column::OrganizationId.eq(org))
        .order_by_asc(meter::Column::Id)
        .all(db)
        .await?)
}

/// Every amount of a price must fit an invoice line at quantity 1: lines
/// are stored as 64-bit minor units of the organization's currency, so a
/// larger amount could be accepted here but never invoiced.
fn check_amounts_fit(
    currency: billing::Currency,
    index: usize,
    spec: &PriceSpec,
) -> WorkflowResult<()> {
    let mut amounts: Vec<(String, Decimal)> = Vec::new();
    if let Some(unit) = spec.unit_amount {
        amounts.push(("unitAmount".into(), unit));
    }
    for (position, tier) in spec.tiers.iter().flatten().enumerate() {
        let number = position + 1;
        amounts.push((format!("tier {number}: unitAmount"), tier.unit_amount));
        amounts.push((format!("tier {number}: flatAmount"), tier.flat_amount));
    }
    for (field, amount) in amounts {
        if currency.to_minor_units(currency.round(amount)).is_err() {
            return Err(WorkflowError::bad_input(format!(
                "price prices[{index}]: {field} {amount} is more than an invoice line can hold ({} {currency})",
                currency.from_minor_units(i64::MAX)
            )));
        }
    }
    Ok(())
}

/// Validates prices and resolves their meters (by code, in `org`).
async fn resolve_prices<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    prices: &[PriceSpec],
) -> WorkflowResult<Vec<Option<meter::Model>>> {
    let currency = billing::Currency::parse(&org.currency)?;
    if prices.is_empty() {
        return Err(WorkflowError::bad_input("a plan needs at least one price"));
    }
    if prices.len() > 100 {
        return Err(WorkflowError::bad_input("a plan has at most 100 prices"));
    }
    for (index, spec) in prices.iter().enumerate() {
        spec_to_billing(format!("prices[{index}]"), spec)
            .validate()
            .map_err(|e| WorkflowError::bad_input(e.to_string()))?;
        if spec.tiers.as_ref().is_some_and(|t| t.len() > 100) {
            return Err(WorkflowError::bad_input(format!(
                "price prices[{index}]: at most 100 tiers"
            )));
        }
        if let Some(description) = &spec.description {
            check_length(
                &format!("price prices[{index}]: description"),
                description,
                MAX_DESCRIPTION_CHARS,
            )?;
        }
        check_amounts_fit(currency, index, spec)?;
    }
    let meters: HashMap<String, meter::Model> = list_meters(db, &org.id)
        .await?
        .into_iter()
        .map(|m| (m.code.clone(), m))
        .collect();
    prices
        .iter()
        .enumerate()
        .map(|(index, spec)| match &spec.meter_code {
            None => Ok(None),
            Some(code) => meters.get(code).cloned().map(Some).ok_or_else(|| {
                WorkflowError::bad_input(format!(
                    "price prices[{index}]: unknown meter code {}",
                    crate::text::quoted(code)
                ))
            }),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn insert_version<C: ConnectionTrait>(
    txn: &C,
    org: &str,
    plan_id: &str,
    version: i32,
    effective_from: DateTime<Utc>,
    now: DateTime<Utc>,
    prices: &[PriceSpec],
    meters: Vec<Option<meter::Model>>,
) -> WorkflowResult<plan_version::Model> {
    let version = plan_version::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.to_string()),
        plan_id: Set(plan_id.to_string()),
        version: Set(version),
        effective_from: Set(effective_from),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    let mut price_rows = Vec::new();
    let mut tier_rows = Vec::new();
    for (position, (spec, meter)) in prices.iter().zip(meters).enumerate() {
        let price_id = new_id();
        for (tier_position, tier) in spec.tiers.iter().flatten().enumerate() {
            tier_rows.push(price_tier::ActiveModel {
                id: Set(new_id()),
                organization_id: Set(org.to_string()),
                price_id: Set(price_id.clone()),
                position: Set(tier_position as i32),
                up_to: Set(tier.up_to.map(Dec)),
                unit_amount: Set(Dec(tier.unit_amount)),
                flat_amount: Set(Dec(tier.flat_amount)),
            });
        }
        price_rows.push(price::ActiveModel {
            id: Set(price_id),
            organization_id: Set(org.to_string()),
            plan_version_id: Set(version.id.clone()),
            position: Set(position as i32),
            model: Set(spec.model),
            timing: Set(spec.timing),
            meter_id: Set(meter.map(|m| m.id)),
            unit_amount: Set(spec.unit_amount.map(Dec)),
            package_size: Set(spec.package_size.map(Dec)),
            description: Set(spec.description.clone()),
        });
    }
    price::Entity::insert_many(price_rows)
        .exec_without_returning(txn)
        .await?;
    price_tier::Entity::insert_many(tier_rows)
        .exec_without_returning(txn)
        .await?;
    Ok(version)
}

fn normalize_prices(prices: Vec<PriceSpec>) -> Vec<PriceSpec> {
    prices
        .into_iter()
        .map(|mut p| {
            // Metered prices are always in arrears; the input default is
            // IN_ADVANCE, so an unspecified timing on a metered price means arrears.
            if p.model != PriceModel::Flat && p.timing == BillingTiming::InAdvance {
                p.timing = BillingTiming::InArrears;
            }
            p
        })
        .collect()
}

/// Creates a plan with version 1 effective from the organization's now.
pub async fn create_plan(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    spec: PlanSpec,
) -> WorkflowResult<PlanView> {
    check_required("code", &spec.code, MAX_NAME_CHARS)?;
    check_length("name", &spec.name, MAX_NAME_CHARS)?;
    if spec.interval_count < 1 || spec.interval_count > 1000 {
        return Err(WorkflowError::bad_input(format!(
            "intervalCount must be between 1 and 1000, got {}",
            spec.interval_count
        )));
    }
    if spec.trial_days < 0 || spec.trial_days > 3650 {
        return Err(WorkflowError::bad_input(format!(
            "trialDays must be between 0 and 3650, got {}",
            spec.trial_days
        )));
    }
    let prices = normalize_prices(spec.prices);
    let txn = crate::txn::begin_write(db).await?;
    let meters = resolve_prices(&txn, org, &prices).await?;
    let exists = plan::Entity::find()
        .filter(plan::Column::OrganizationId.eq(&org.id))
        .filter(plan::Column::Code.eq(&spec.code))
        .one(&txn)
        .await?;
    if exists.is_some() {
        return Err(WorkflowError::conflict(format!(
            "a plan with code {:?} already exists",
            spec.code
        )));
    }
    let now = org_now(org, clock);
    let plan = plan::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id.clone()),
        code: Set(spec.code),
        name: Set(spec.name),
        interval: Set(spec.interval),
        interval_count: Set(spec.interval_count),
        trial_days: Set(spec.trial_days),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    insert_version(&txn, &org.id, &plan.id, 1, now, now, &prices, meters).await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "plan.created",
            entity_type: "plan",
            entity_id: &plan.id,
            before: None,
            after: snapshot(&plan),
        },
        now,
    )
    .await?;
    let view = plan_at(&txn, &org.id, &plan.id, now)
        .await?
        .ok_or(WorkflowError::NotFound("plan"))?;
    txn.commit().await?;
    Ok(view)
}

/// Adds a version with new prices, effective from `effective_from` (not in
/// the past, after the latest version's start).
pub async fn create_plan_version(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    plan_id: &str,
    prices: Vec<PriceSpec>,
    effective_from: DateTime<Utc>,
) -> WorkflowResult<PlanView> {
    let prices = normalize_prices(prices);
    let now = org_now(org, clock);
    let txn = crate::txn::begin_write(db).await?;
    let plan = plan::Entity::find_by_id(plan_id.to_string())
        .filter(plan::Column::OrganizationId.eq(&org.id))
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("plan"))?;
    let meters = resolve_prices(&txn, org, &prices).await?;
    if effective_from < now {
        return Err(WorkflowError::bad_input(format!(
            "effectiveFrom {effective_from} is in the past (now is {now})"
        )));
    }
    let latest = plan_version::Entity::find()
        .filter(plan_version::Column::PlanId.eq(&plan.id))
        .order_by_desc(plan_version::Column::Version)
        .one(&txn)
        .await?
        .ok_or_else(|| WorkflowError::Internal(format!("plan {} has no version", plan.id)))?;
    if effective_from <= latest.effective_from {
        return Err(WorkflowError::bad_input(format!(
            "effectiveFrom {effective_from} must be after version {}'s start {}",
            latest.version, latest.effective_from
        )));
    }
    let version = insert_version(
        &txn,
        &org.id,
        &plan.id,
        latest.version + 1,
        effective_from,
        now,
        &prices,
        meters,
    )
    .await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "plan.version_created",
            entity_type: "plan",
            entity_id: &plan.id,
            before: None,
            after: snapshot(&version),
        },
        now,
    )
    .await?;
    let view = plan_at(&txn, &org.id, &plan.id, now)
        .await?
        .ok_or(WorkflowError::NotFound("plan"))?;
    txn.commit().await?;
    Ok(view)
}

/// The version of `plan_id` in force at `at` (the first version when `at`
/// precedes them all).
pub fn version_at(
    versions: &[plan_version::Model],
    at: DateTime<Utc>,
) -> Option<&plan_version::Model> {
    versions
        .iter()
        .filter(|v| v.effective_from <= at)
        .max_by_key(|v| v.version)
        .or_else(|| versions.iter().min_by_key(|v| v.version))
}

/// Prices (with tiers and meters) of the given versions, in position order.
pub async fn prices_of_versions<C: ConnectionTrait>(
    db: &C,
    version_ids: &[String],
) -> WorkflowResult<BTreeMap<String, Vec<PriceView>>> {
    let mut out: BTreeMap<String, Vec<PriceView>> = BTreeMap::new();
    if version_ids.is_empty() {
        return Ok(out);
    }
    let prices = price::Entity::find()
        .filter(price::Column::PlanVersionId.is_in(version_ids.iter().cloned()))
        .order_by_asc(price::Column::Position)
        .all(db)
        .await?;
    let price_ids: Vec<String> = prices.iter().map(|p| p.id.clone()).collect();
    let mut tiers: HashMap<String, Vec<price_tier::Model>> = HashMap::new();
    if !price_ids.is_empty() {
        for tier in price_tier::Entity::find()
            .filter(price_tier::Column::PriceId.is_in(price_ids))
            .order_by_asc(price_tier::Column::Position)
            .all(db)
            .await?
        {
            tiers.entry(tier.price_id.clone()).or_default().push(tier);
        }
    }
    let meter_ids: Vec<String> = prices.iter().filter_map(|p| p.meter_id.clone()).collect();
    let mut meters: HashMap<String, meter::Model> = HashMap::new();
    if !meter_ids.is_empty() {
        for m in meter::Entity::find()
            .filter(meter::Column::Id.is_in(meter_ids))
            .all(db)
            .await?
        {
            meters.insert(m.id.clone(), m);
        }
    }
    for price in prices {
        let view = PriceView {
            tiers: tiers.remove(&price.id).unwrap_or_default(),
            meter: price
                .meter_id
                .as_ref()
                .and_then(|id| meters.get(id).cloned()),
            price,
        };
        out.entry(view.price.plan_version_id.clone())
            .or_default()
            .push(view);
    }
    Ok(out)
}

/// Plans (with the version in force at `at`) for these ids, in `org`.
pub async fn plans_at<C: ConnectionTrait>(
    db: &C,
    org: &str,
    plan_ids: Option<&[String]>,
    at: DateTime<Utc>,
) -> WorkflowResult<Vec<PlanView>> {
    let mut select = plan::Entity::find().filter(plan::Column::OrganizationId.eq(org));
    if let Some(ids) = plan_ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        select = select.filter(plan::Column::Id.is_in(ids.iter().cloned()));
    }
    let plans = select.order_by_asc(plan::Column::Id).all(db).await?;
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    let versions = plan_version::Entity::find()
        .filter(plan_version::Column::PlanId.is_in(plans.iter().map(|p| p.id.clone())))
        .all(db)
        .await?;
    let mut by_plan: HashMap<String, Vec<plan_version::Model>> = HashMap::new();
    for v in versions {
        by_plan.entry(v.plan_id.clone()).or_default().push(v);
    }
    let chosen: Vec<(plan::Model, plan_version::Model)> = plans
        .into_iter()
        .filter_map(|p| {
            let version = by_plan
                .get(&p.id)
                .and_then(|vs| version_at(vs, at))
                .cloned();
            version.map(|v| (p, v))
        })
        .collect();
    let version_ids: Vec<String> = chosen.iter().map(|(_, v)| v.id.clone()).collect();
    let mut prices = prices_of_versions(db, &version_ids).await?;
    Ok(chosen
        .into_iter()
        .map(|(plan, version)| PlanView {
            prices: prices.remove(&version.id).unwrap_or_default(),
            plan,
            version,
        })
        .collect())
}

/// One plan of `org` with the version in force at `at`.
pub async fn plan_at<C: ConnectionTrait>(
    db: &C,
    org: &str,
    plan_id: &str,
    at: DateTime<Utc>,
) -> WorkflowResult<Option<PlanView>> {
    let ids = [plan_id.to_string()];
    Ok(plans_at(db, org, Some(&ids), at).await?.into_iter().next())
}

/// Prices by id (with tiers and meters), for invoice lines.
pub async fn prices_by_id<C: ConnectionTrait>(
    db: &C,
    org: &str,
    ids: &[String],
) -> WorkflowResult<HashMap<String, PriceView>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let version_ids: Vec<String> = price::Entity::find()
        .filter(price::Column::OrganizationId.eq(org))
        .filter(price::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(|p| p.plan_version_id)
        .collect();
    Ok(prices_of_versions(db, &version_ids)
        .await?
        .into_values()
        .flatten()
        .filter(|v| ids.contains(&v.price.id))
        .map(|v| (v.price.id.clone(), v))
        .collect())
}
