//! The catalog: meters, plans and their prices.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use entity::meter;
use rust_decimal::Decimal;
use workflows::catalog::{MeterSpec, PlanSpec, PlanView, PriceSpec, PriceView, TierSpec};

use super::auth::{require, require_org, roles, state};
use super::enums::{Aggregation, BillingTiming, Interval, PriceModel};
use super::error::ApiResult;
use super::scalars::{Dec, Instant};

#[derive(Clone)]
pub struct Meter(pub meter::Model);

#[Object]
impl Meter {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn aggregation(&self) -> Aggregation {
        self.0.aggregation.into()
    }
    async fn unique_property(&self) -> Option<&str> {
        self.0.unique_property.as_deref()
    }
}

#[derive(SimpleObject, Clone)]
pub struct Tier {
    pub up_to: Option<Dec>,
    pub unit_amount: Dec,
    pub flat_amount: Dec,
}

#[derive(Clone)]
pub struct Price(pub PriceView);

#[Object]
impl Price {
    async fn id(&self) -> ID {
        ID(self.0.price.id.clone())
    }
    async fn model(&self) -> PriceModel {
        self.0.price.model.into()
    }
    async fn timing(&self) -> BillingTiming {
        self.0.price.timing.into()
    }
    async fn meter(&self) -> Option<Meter> {
        self.0.meter.clone().map(Meter)
    }
    async fn unit_amount(&self) -> Option<Dec> {
        self.0.price.unit_amount.map(|d| Dec(d.get()))
    }
    async fn package_size(&self) -> Option<Dec> {
        self.0.price.package_size.map(|d| Dec(d.get()))
    }
    /// Tiers of a GRADUATED or VOLUME price; null for the other models.
    async fn tiers(&self) -> Option<Vec<Tier>> {
        matches!(
            self.0.price.model,
            entity::PriceModel::Graduated | entity::PriceModel::Volume
        )
        .then(|| {
            self.0
                .tiers
                .iter()
                .map(|t| Tier {
                    up_to: t.up_to.map(|d| Dec(d.get())),
                    unit_amount: Dec(t.unit_amount.get()),
                    flat_amount: Dec(t.flat_amount.get()),
                })
                .collect()
        })
    }
    async fn description(&self) -> Option<&str> {
        self.0.price.description.as_deref()
    }
}

pub struct Plan(pub PlanView);

#[Object]
impl Plan {
    async fn id(&self) -> ID {
        ID(self.0.plan.id.clone())
    }
    async fn code(&self) -> &str {
        &self.0.plan.code
    }
    async fn name(&self) -> &str {
        &self.0.plan.name
    }
    async fn interval(&self) -> Interval {
        self.0.plan.interval.into()
    }
    async fn interval_count(&self) -> i32 {
        self.0.plan.interval_count
    }
    async fn trial_days(&self) -> i32 {
        self.0.plan.trial_days
    }
    /// Version in force now; createPlanVersion adds one.
    async fn version(&self) -> i32 {
        self.0.version.version
    }
    /// When the version in force took effect.
    async fn version_effective_from(&self) -> Instant {
        Instant(self.0.version.effective_from)
    }
    async fn prices(&self) -> Vec<Price> {
        self.0.prices.iter().cloned().map(Price).collect()
    }
}

#[derive(InputObject)]
pub struct CreateMeterInput {
    pub code: String,
    pub name: String,
    pub aggregation: Aggregation,
    pub unique_property: Option<String>,
}

#[derive(InputObject)]
pub struct TierInput {
    pub up_to: Option<Dec>,
    pub unit_amount: Dec,
    #[graphql(default_with = "Some(Dec(Decimal::ZERO))")]
    pub flat_amount: Option<Dec>,
}

#[derive(InputObject)]
pub struct PriceInput {
    pub model: PriceModel,
    /// Metered models are always billed IN_ARREARS (the IN_ADVANCE default applies to FLAT).
    #[graphql(default_with = "Some(BillingTiming::InAdvance)")]
    pub timing: Option<BillingTiming>,
    pub meter_code: Option<String>,
    pub unit_amount: Option<Dec>,
    pub package_size: Option<Dec>,
    pub tiers: Option<Vec<TierInput>>,
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct CreatePlanInput {
    pub code: String,
    pub name: String,
    pub interval: Interval,
    #[graphql(default_with = "Some(1)")]
    pub interval_count: Option<i32>,
    #[graphql(default_with = "Some(0)")]
    pub trial_days: Option<i32>,
    pub prices: Vec<PriceInput>,
}

fn price_spec(input: PriceInput) -> PriceSpec {
    PriceSpec {
        model: input.model.into(),
        timing: input.timing.unwrap_or(BillingTiming::InAdvance).into(),
        meter_code: input.meter_code,
        unit_amount: input.unit_amount.map(|d| d.0),
        package_size: input.package_size.map(|d| d.0),
        tiers: input.tiers.map(|tiers| {
            tiers
                .into_iter()
                .map(|t| TierSpec {
                    up_to: t.up_to.map(|d| d.0),
                    unit_amount: t.unit_amount.0,
                    flat_amount: t.flat_amount.map_or(Decimal::ZERO, |d| d.0),
                })
                .collect()
        }),
        description: input.description,
    }
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    async fn meters(&self, ctx: &Context<'_>) -> ApiResult<Vec<Meter>> {
        let caller = require(ctx, roles::READ)?;
        Ok(
            workflows::catalog::list_meters(&state(ctx).db, &caller.organization_id)
                .await?
                .into_iter()
                .map(Meter)
                .collect(),
        )
    }

    async fn plans(&self, ctx: &Context<'_>) -> ApiResult<Vec<Plan>> {
        let (_, org) = require_org(ctx, roles::READ).await?;
        let st = state(ctx);
        let now = workflows::clock::org_now(&org, st.clock.as_ref());
        Ok(workflows::catalog::plans_at(&st.db, &org.id, None, now)
            .await?
            .into_iter()
            .map(Plan)
            .collect())
    }

    async fn plan(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Plan>> {
        let (_, org) = require_org(ctx, roles::READ).await?;
        let st = state(ctx);
        let now = workflows::clock::org_now(&org, st.clock.as_ref());
        Ok(workflows::catalog::plan_at(&st.db, &org.id, &id, now)
            .await?
            .map(Plan))
    }
}

#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    async fn create_meter(&self, ctx: &Context<'_>, input: CreateMeterInput) -> ApiResult<Meter> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let spec = MeterSpec {
            code: input.code,
            name: input.name,
            aggregation: input.aggregation.into(),
            unique_property: input.unique_property,
        };
        let model = workflows::catalog::create_meter(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            spec,
        )
        .await?;
        Ok(Meter(model))
    }

    async fn create_plan(&self, ctx: &Context<'_>, input: CreatePlanInput) -> ApiResult<Plan> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let spec = PlanSpec {
            code: input.code,
            name: input.name,
            interval: input.interval.into(),
            interval_count: input.interval_count.unwrap_or(1),
            trial_days: input.trial_days.unwrap_or(0),
            prices: input.prices.into_iter().map(price_spec).collect(),
        };
        let view =
            workflows::catalog::create_plan(&st.db, st.clock.as_ref(), &org, &caller.actor(), spec)
                .await?;
        Ok(Plan(view))
    }

    /// New prices for a plan from effectiveFrom on; periods spanning it are split by day.
    async fn create_plan_version(
        &self,
        ctx: &Context<'_>,
        plan_id: ID,
        prices: Vec<PriceInput>,
        effective_from: Instant,
    ) -> ApiResult<Plan> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let view = workflows::catalog::create_plan_version(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            &plan_id,
            prices.into_iter().map(price_spec).collect(),
            effective_from.0,
        )
        .await?;
        Ok(Plan(view))
    }
}
