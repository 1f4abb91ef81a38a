//! Subscriptions: intent only; the workers bill them.

use async_graphql::{Context, ID, InputObject, Object};
use entity::subscription;
use workflows::subscriptions::{Cancellation, NewSubscription, PlanChange, SubscriptionFilter};

use super::auth::{require, require_org, roles, state};
use super::catalog::Plan;
use super::customers::Customer;
use super::enums::{BillingAnchor, ChangeTiming, ProrationBehavior, SubscriptionStatus};
use super::error::{ApiError, ApiResult};
use super::invoices::Invoice;
use super::loaders;
use super::pagination::{PageInfo, count, page_args, page_info};
use super::scalars::Instant;

#[derive(Clone)]
pub struct Subscription(pub subscription::Model);

#[Object]
impl Subscription {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn customer(&self, ctx: &Context<'_>) -> ApiResult<Customer> {
        if let Some(hit) = loaders::customer(ctx, &self.0.customer_id) {
            return Ok(Customer(hit));
        }
        workflows::customers::get_customer(
            &state(ctx).db,
            &self.0.organization_id,
            &self.0.customer_id,
        )
        .await?
        .map(Customer)
        .ok_or_else(|| ApiError::not_found("customer"))
    }
    /// The current plan, with its version in force now.
    async fn plan(&self, ctx: &Context<'_>) -> ApiResult<Plan> {
        if let Some(hit) = loaders::plan(ctx, &self.0.plan_id) {
            return Ok(Plan(hit));
        }
        let st = state(ctx);
        let org = workflows::tenancy::load_org(&st.db, &self.0.organization_id).await?;
        let now = workflows::clock::org_now(&org, st.clock.as_ref());
        workflows::catalog::plan_at(&st.db, &org.id, &self.0.plan_id, now)
            .await?
            .map(Plan)
            .ok_or_else(|| ApiError::not_found("plan"))
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    async fn status(&self) -> SubscriptionStatus {
        self.0.status.into()
    }
    async fn billing_anchor(&self) -> BillingAnchor {
        self.0.billing_anchor.into()
    }
    async fn started_at(&self) -> Instant {
        Instant(self.0.started_at)
    }
    async fn trial_end(&self) -> Option<Instant> {
        self.0.trial_end.map(Instant)
    }
    async fn current_period_start(&self) -> Option<Instant> {
        self.0.current_period_start.map(Instant)
    }
    async fn current_period_end(&self) -> Option<Instant> {
        self.0.current_period_end.map(Instant)
    }
    async fn cancel_at_period_end(&self) -> bool {
        self.0.cancel_at_period_end
    }
    async fn canceled_at(&self) -> Option<Instant> {
        self.0.canceled_at.map(Instant)
    }
    async fn invoices(&self, ctx: &Context<'_>) -> ApiResult<Vec<Invoice>> {
        if let Some(hit) = loaders::invoices(ctx, &self.0.id) {
            return Ok(hit.into_iter().map(Invoice::stored).collect());
        }
        let by_sub = workflows::invoice_actions::invoices_of_subscriptions(
            &state(ctx).db,
            &self.0.organization_id,
            vec![self.0.id.clone()],
        )
        .await?;
        Ok(by_sub
            .into_values()
            .flatten()
            .map(Invoice::stored)
            .collect())
    }
}

pub struct SubscriptionConnection {
    pub nodes: Vec<Subscription>,
    pub has_next_page: bool,
    pub total: u64,
}

#[Object]
impl SubscriptionConnection {
    async fn nodes(&self) -> &[Subscription] {
        &self.nodes
    }
    async fn page_info(&self) -> PageInfo {
        page_info(
            self.has_next_page,
            self.nodes.last().map(|n| n.0.id.as_str()),
        )
    }
    async fn total_count(&self) -> i32 {
        count(self.total)
    }
}

#[derive(InputObject)]
pub struct CreateSubscriptionInput {
    pub customer_id: ID,
    pub plan_id: ID,
    #[graphql(default_with = "Some(1)")]
    pub quantity: Option<i32>,
    /// Overrides the plan's trialDays when given.
    pub trial_days: Option<i32>,
    #[graphql(default_with = "Some(BillingAnchor::Anniversary)")]
    pub billing_anchor: Option<BillingAnchor>,
    /// Defaults to the organization's now.
    pub start_at: Option<Instant>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct ChangeSubscriptionPlanInput {
    pub subscription_id: ID,
    pub plan_id: ID,
    pub quantity: Option<i32>,
    #[graphql(default_with = "Some(ProrationBehavior::CreateProrations)")]
    pub proration_behavior: Option<ProrationBehavior>,
    #[graphql(default_with = "Some(ChangeTiming::Immediately)")]
    pub timing: Option<ChangeTiming>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct CancelSubscriptionInput {
    pub subscription_id: ID,
    pub at_period_end: bool,
    #[graphql(default_with = "Some(ProrationBehavior::CreateProrations)")]
    pub proration_behavior: Option<ProrationBehavior>,
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
pub struct SubscriptionQuery;

#[Object]
impl SubscriptionQuery {
    #[graphql(complexity = "super::pagination::page_cost(first, child_complexity)")]
    async fn subscriptions(
        &self,
        ctx: &Context<'_>,
        status: Option<SubscriptionStatus>,
        customer_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<SubscriptionConnection> {
        let (_, org) = require_org(ctx, roles::READ).await?;
        let (first, after) = page_args(first, after)?;
        let filter = SubscriptionFilter {
            status: status.map(Into::into),
            customer_id: customer_id.map(|id| id.0),
        };
        let st = state(ctx);
        let page =
            workflows::subscriptions::list_subscriptions(&st.db, &org.id, filter, first, after)
                .await?;
        if loaders::wants(ctx, &["nodes", "customer"]) {
            let ids = page.nodes.iter().map(|s| s.customer_id.clone()).collect();
            let customers = workflows::customers::customers_by_ids(&st.db, &org.id, ids).await?;
            loaders::prime_customers(ctx, customers.into_iter().map(|c| (c.id.clone(), c)));
        }
        if loaders::wants(ctx, &["nodes", "plan"]) {
            let mut ids: Vec<String> = page.nodes.iter().map(|s| s.plan_id.clone()).collect();
            ids.sort();
            ids.dedup();
            let now = workflows::clock::org_now(&org, st.clock.as_ref());
            let plans = workflows::catalog::plans_at(&st.db, &org.id, Some(&ids), now).await?;
            loaders::prime_plans(ctx, plans.into_iter().map(|p| (p.plan.id.clone(), p)));
        }
        if loaders::wants(ctx, &["nodes", "invoices"]) {
            let ids: Vec<String> = page.nodes.iter().map(|s| s.id.clone()).collect();
            let mut by_sub =
                workflows::invoice_actions::invoices_of_subscriptions(&st.db, &org.id, ids.clone())
                    .await?;
            // Subscriptions without invoices are primed too (an empty list is an answer).
            loaders::prime_invoices(
                ctx,
                ids.into_iter().map(|id| {
                    let invoices = by_sub.remove(&id).unwrap_or_default();
                    (id, invoices)
                }),
            );
        }
        Ok(SubscriptionConnection {
            nodes: page.nodes.into_iter().map(Subscription).collect(),
            has_next_page: page.has_next_page,
            total: page.total,
        })
    }

    async fn subscription(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Subscription>> {
        let caller = require(ctx, roles::READ)?;
        Ok(
            workflows::subscriptions::get_subscription(
                &state(ctx).db,
                &caller.organization_id,
                &id,
            )
            .await?
            .map(Subscription),
        )
    }
}

#[derive(Default)]
pub struct SubscriptionMutation;

#[Object]
impl SubscriptionMutation {
    async fn create_subscription(
        &self,
        ctx: &Context<'_>,
        input: CreateSubscriptionInput,
    ) -> ApiResult<Subscription> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let request = NewSubscription {
            customer_id: input.customer_id.0,
            plan_id: input.plan_id.0,
            quantity: input.quantity.unwrap_or(1),
            trial_days: input.trial_days,
            billing_anchor: input
                .billing_anchor
                .unwrap_or(BillingAnchor::Anniversary)
                .into(),
            start_at: input.start_at.map(|t| t.0),
            idempotency_key: input.idempotency_key,
        };
        let sub = workflows::subscriptions::create_subscription(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            request,
        )
        .await?;
        Ok(Subscription(sub))
    }

    async fn change_subscription_plan(
        &self,
        ctx: &Context<'_>,
        input: ChangeSubscriptionPlanInput,
    ) -> ApiResult<Subscription> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let request = PlanChange {
            subscription_id: input.subscription_id.0,
            plan_id: input.plan_id.0,
            quantity: input.quantity,
            proration_behavior: input
                .proration_behavior
                .unwrap_or(ProrationBehavior::CreateProrations)
                .into(),
            timing: input.timing.unwrap_or(ChangeTiming::Immediately).into(),
            idempotency_key: input.idempotency_key,
        };
        let sub = workflows::subscriptions::change_plan(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            request,
        )
        .await?;
        Ok(Subscription(sub))
    }

    async fn cancel_subscription(
        &self,
        ctx: &Context<'_>,
        input: CancelSubscriptionInput,
    ) -> ApiResult<Subscription> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let request = Cancellation {
            subscription_id: input.subscription_id.0,
            at_period_end: input.at_period_end,
            proration_behavior: input
                .proration_behavior
                .unwrap_or(ProrationBehavior::CreateProrations)
                .into(),
            idempotency_key: input.idempotency_key,
        };
        let sub = workflows::subscriptions::cancel(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            request,
        )
        .await?;
        Ok(Subscription(sub))
    }
}
