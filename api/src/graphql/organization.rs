//! The caller's organization, API keys, and the test clock.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use entity::organization;
use workflows::tenancy::{NewKey, NewOrganization};

use super::auth::{is_bootstrap, require, require_org, roles, state};
use super::enums::{ApiKeyRole, TestClockStatus};
use super::error::{ApiError, ApiResult};
use super::scalars::Instant;

pub struct Organization(pub organization::Model);

#[Object]
impl Organization {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
    async fn net_terms_days(&self) -> i32 {
        self.0.net_terms_days
    }
    async fn grace_period_hours(&self) -> i32 {
        self.0.grace_period_hours
    }
    async fn late_usage_window_days(&self) -> i32 {
        self.0.late_usage_window_days
    }
    /// Days a subscription may stay PAST_DUE before it is canceled (null: never).
    async fn cancel_after_past_due_days(&self) -> Option<i32> {
        self.0.cancel_after_past_due_days
    }
    /// The organization's current time (its test clock when it has one).
    async fn now(&self, ctx: &Context<'_>) -> Instant {
        Instant(workflows::clock::org_now(
            &self.0,
            state(ctx).clock.as_ref(),
        ))
    }
    async fn test_clock(&self) -> Option<TestClock> {
        test_clock(&self.0)
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TestClock {
    pub frozen_time: Instant,
    pub status: TestClockStatus,
}

fn test_clock(org: &organization::Model) -> Option<TestClock> {
    org.test_clock_time.map(|t| TestClock {
        frozen_time: Instant(t),
        status: org
            .test_clock_status
            .unwrap_or(entity::TestClockStatus::Ready)
            .into(),
    })
}

#[derive(InputObject)]
pub struct CreateOrganizationInput {
    pub name: String,
    pub currency: String,
    #[graphql(default_with = "Some(\"UTC\".to_string())")]
    pub timezone: Option<String>,
    #[graphql(default_with = "Some(30)")]
    pub net_terms_days: Option<i32>,
    #[graphql(default_with = "Some(0)")]
    pub grace_period_hours: Option<i32>,
    #[graphql(default_with = "Some(35)")]
    pub late_usage_window_days: Option<i32>,
    /// Cancel a subscription this many days after it went PAST_DUE (unset: never).
    pub cancel_after_past_due_days: Option<i32>,
    /// Freeze this organization's clock at the given instant; only advanceTestClock moves it.
    pub test_clock_start: Option<Instant>,
}

#[derive(SimpleObject)]
pub struct CreateOrganizationPayload {
    pub organization: Organization,
    pub api_key: String,
}

#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    pub id: ID,
    pub api_key: String,
    pub role: ApiKeyRole,
}

fn new_key() -> (String, NewKey) {
    let secret = crate::secret::random_token();
    let hash = crate::secret::hash_token(&secret);
    // The display prefix comes from the hash, so no part of the secret is stored.
    let key = NewKey {
        prefix: hash.chars().take(8).collect(),
        hash,
    };
    (secret, key)
}

#[derive(Default)]
pub struct OrganizationQuery;

#[Object]
impl OrganizationQuery {
    /// The running Valora version.
    async fn api_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    async fn organization(&self, ctx: &Context<'_>) -> ApiResult<Organization> {
        let (_, org) = require_org(ctx, roles::ANY).await?;
        Ok(Organization(org))
    }
}

#[derive(Default)]
pub struct OrganizationMutation;

#[Object]
impl OrganizationMutation {
    /// Bootstrap: needs the server's admin token as the bearer token.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        input: CreateOrganizationInput,
    ) -> ApiResult<CreateOrganizationPayload> {
        if !is_bootstrap(ctx) {
            return Err(ApiError::unauthenticated(
                "createOrganization needs the bootstrap token as the bearer token",
            ));
        }
        let (secret, key) = new_key();
        let input = NewOrganization {
            name: input.name,
            currency: input.currency,
            timezone: input.timezone.unwrap_or_else(|| "UTC".into()),
            net_terms_days: input.net_terms_days.unwrap_or(30),
            grace_period_hours: input.grace_period_hours.unwrap_or(0),
            late_usage_window_days: input.late_usage_window_days.unwrap_or(35),
            cancel_after_past_due_days: input.cancel_after_past_due_days,
            test_clock_start: input.test_clock_start.map(|t| t.0),
        };
        let st = state(ctx);
        let (org, _key) = workflows::tenancy::create_organization(
            &st.db,
            st.clock.as_ref(),
            "bootstrap",
            input,
            key,
        )
        .await?;
        Ok(CreateOrganizationPayload {
            organization: Organization(org),
            api_key: secret,
        })
    }

    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        role: ApiKeyRole,
    ) -> ApiResult<CreateApiKeyPayload> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let (secret, key) = new_key();
        let st = state(ctx);
        let model = workflows::tenancy::create_api_key(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            role.into(),
            key,
        )
        .await?;
        Ok(CreateApiKeyPayload {
            id: ID(model.id),
            api_key: secret,
            role,
        })
    }

    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> ApiResult<bool> {
        let (caller, org) = require_org(ctx, roles::ADMIN).await?;
        let st = state(ctx);
        workflows::tenancy::revoke_api_key(&st.db, st.clock.as_ref(), &org, &caller.actor(), &id)
            .await?;
        Ok(true)
    }

    /// Moves the caller's test clock forward; due work then runs through the queues.
    async fn advance_test_clock(&self, ctx: &Context<'_>, to: Instant) -> ApiResult<TestClock> {
        let caller = require(ctx, roles::ADMIN)?;
        let org = workflows::test_clock::advance(
            &state(ctx).db,
            &caller.organization_id,
            &caller.actor(),
            to.0,
        )
        .await?;
        test_clock(&org).ok_or_else(|| ApiError::bad_input("this organization has no test clock"))
    }
}
