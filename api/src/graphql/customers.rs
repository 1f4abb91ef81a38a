//! Customers.

use async_graphql::{Context, ID, InputObject, Object};
use entity::customer;
use workflows::customers::CustomerSpec;

use super::auth::{require, require_org, roles, state};
use super::error::ApiResult;
use super::loaders;
use super::pagination::{PageInfo, count, page_args, page_info};
use super::subscriptions::Subscription;

#[derive(Clone)]
pub struct Customer(pub customer::Model);

#[Object]
impl Customer {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn external_id(&self) -> &str {
        &self.0.external_id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
    async fn subscriptions(&self, ctx: &Context<'_>) -> ApiResult<Vec<Subscription>> {
        if let Some(hit) = loaders::subscriptions(ctx, &self.0.id) {
            return Ok(hit.into_iter().map(Subscription).collect());
        }
        let by_customer = workflows::subscriptions::subscriptions_of_customers(
            &state(ctx).db,
            &self.0.organization_id,
            vec![self.0.id.clone()],
        )
        .await?;
        Ok(by_customer
            .into_values()
            .flatten()
            .map(Subscription)
            .collect())
    }
}

pub struct CustomerConnection {
    pub nodes: Vec<Customer>,
    pub has_next_page: bool,
    pub total: u64,
}

#[Object]
impl CustomerConnection {
    async fn nodes(&self) -> &[Customer] {
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
pub struct CreateCustomerInput {
    pub external_id: String,
    pub name: String,
    pub email: Option<String>,
}

#[derive(Default)]
pub struct CustomerQuery;

#[Object]
impl CustomerQuery {
    #[graphql(complexity = "super::pagination::page_cost(first, child_complexity)")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<CustomerConnection> {
        let caller = require(ctx, roles::READ)?;
        let (first, after) = page_args(first, after)?;
        let db = &state(ctx).db;
        let org = &caller.organization_id;
        let page = workflows::customers::list_customers(db, org, first, after).await?;
        if loaders::wants(ctx, &["nodes", "subscriptions"]) {
            let ids: Vec<String> = page.nodes.iter().map(|c| c.id.clone()).collect();
            let mut subs =
                workflows::subscriptions::subscriptions_of_customers(db, org, ids.clone()).await?;
            loaders::prime_subscriptions(
                ctx,
                ids.iter()
                    .map(|id| (id.clone(), subs.remove(id).unwrap_or_default())),
            );
        }
        Ok(CustomerConnection {
            nodes: page.nodes.into_iter().map(Customer).collect(),
            has_next_page: page.has_next_page,
            total: page.total,
        })
    }

    async fn customer(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Customer>> {
        let caller = require(ctx, roles::READ)?;
        Ok(
            workflows::customers::get_customer(&state(ctx).db, &caller.organization_id, &id)
                .await?
                .map(Customer),
        )
    }
}

#[derive(Default)]
pub struct CustomerMutation;

#[Object]
impl CustomerMutation {
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        input: CreateCustomerInput,
    ) -> ApiResult<Customer> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        let spec = CustomerSpec {
            external_id: input.external_id,
            name: input.name,
            email: input.email,
        };
        let model = workflows::customers::create_customer(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            spec,
        )
        .await?;
        Ok(Customer(model))
    }
}
