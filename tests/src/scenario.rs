//! Driving a whole billing scenario through the public surface: a server
//! with its workers, an organization on a test clock, GraphQL calls, and
//! `advanceTestClock` waited on until the clock is READY again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TestEnv;
use crate::http::Client;

/// A running server (with its worker pool) and an organization's admin client.
pub struct Scenario {
    pub env: TestEnv,
    pub server: api::server::RunningServer,
    /// Authorized as the organization's first ADMIN key.
    pub client: Client,
    /// Unauthenticated client (bootstrap calls pass the token themselves).
    pub anonymous: Client,
}

impl Scenario {
    /// Starts a server with in-process workers on `env` and creates an
    /// organization from `org` (a `CreateOrganizationInput`; `currency` and
    /// `name` default to USD / "Scenario").
    pub async fn start(env: TestEnv, org: Value) -> Scenario {
        let mut config = env.config.clone();
        config.embedded_workers = true;
        let token = config.admin_token.clone().expect("test config has a token");
        let server = api::server::start(config).await.expect("server starts");
        let anonymous = Client::new(server.addr);
        let mut input = json!({ "name": "Scenario", "currency": "USD" });
        if let (Some(base), Some(extra)) = (input.as_object_mut(), org.as_object()) {
            base.extend(extra.clone());
        }
        let answer = anonymous
            .with_key(&token)
            .graphql(
                "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { apiKey organization { id } } }",
                json!({ "input": input }),
            )
            .await;
        let key = answer["data"]["createOrganization"]["apiKey"]
            .as_str()
            .unwrap_or_else(|| panic!("createOrganization failed: {answer}"))
            .to_string();
        Scenario {
            env,
            client: anonymous.with_key(&key),
            anonymous,
            server,
        }
    }

    /// Runs an operation and returns `data`, failing the test on any error.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let answer = self.client.graphql(query, variables).await;
        if answer.get("errors").is_some_and(|e| !e.is_null()) {
            panic!("GraphQL errors for {query}: {answer}");
        }
        answer["data"].clone()
    }

    /// Moves the test clock to `to` and waits until every due job has run.
    pub async fn advance(&self, to: &str) {
        self.gql(
            "mutation($to: DateTime!) { advanceTestClock(to: $to) { status } }",
            json!({ "to": to }),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let data = self
                .gql(
                    "{ organization { testClock { status frozenTime } } }",
                    json!({}),
                )
                .await;
            if data["organization"]["testClock"]["status"] == "READY" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "test clock still {} 90 s after advancing to {to}",
                data["organization"]["testClock"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn create_customer(&self, external_id: &str) -> String {
        let data = self
            .gql(
                "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
                json!({ "input": { "externalId": external_id, "name": external_id } }),
            )
            .await;
        data["createCustomer"]["id"]
            .as_str()
            .expect("customer id")
            .to_string()
    }

    pub async fn create_meter(&self, code: &str, aggregation: &str) -> String {
        let data = self
            .gql(
                "mutation($input: CreateMeterInput!) { createMeter(input: $input) { id } }",
                json!({ "input": { "code": code, "name": code, "aggregation": aggregation } }),
            )
            .await;
        data["createMeter"]["id"]
            .as_str()
            .expect("meter id")
            .to_string()
    }

    /// Creates a plan from a `CreatePlanInput`.
    pub async fn create_plan(&self, input: Value) -> String {
        let data = self
            .gql(
                "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
                json!({ "input": input }),
            )
            .await;
        data["createPlan"]["id"]
            .as_str()
            .expect("plan id")
            .to_string()
    }

    /// Creates a subscription from a `CreateSubscriptionInput`.
    pub async fn subscribe(&self, input: Value) -> String {
        let data = self
            .gql(
                "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) { id } }",
                json!({ "input": input }),
            )
            .await;
        data["createSubscription"]["id"]
            .as_str()
            .expect("subscription id")
            .to_string()
    }

    /// Sends usage events; every one must be ACCEPTED.
    pub async fn ingest(&self, events: Value) {
        let data = self
            .gql(
                "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted rejected results { index outcome code message } } }",
                json!({ "events": events }),
            )
            .await;
        assert_eq!(
            data["ingestUsage"]["rejected"], 0,
            "usage rejected: {}",
            data["ingestUsage"]
        );
    }

    pub async fn subscription(&self, id: &str) -> Value {
        self.gql(
            "query($id: ID!) { subscription(id: $id) { id status currentPeriodStart currentPeriodEnd canceledAt plan { id } quantity } }",
            json!({ "id": id }),
        )
        .await["subscription"]
            .clone()
    }

    /// The subscription's invoices, oldest first, with their lines.
    pub async fn invoices(&self, subscription_id: &str) -> Vec<Value> {
        let data = self
            .gql(
                "query($sub: ID!) { invoices(subscriptionId: $sub, first: 100) { nodes {
                    id number status total subtotal periodStart periodEnd contentHash dueAt
                    lines { kind description quantity unitAmount amount periodStart periodEnd }
                } } }",
                json!({ "sub": subscription_id }),
            )
            .await;
        let mut invoices = data["invoices"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        invoices.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v["periodEnd"].as_str().unwrap_or("").to_string(),
                    v["id"].as_str().unwrap_or("").to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        invoices
    }

    pub async fn finish(self) {
        self.server.stop().await.expect("server stops");
        self.env.cleanup().await;
    }
}

/// The amounts of an invoice's lines, as strings, in line order.
pub fn line_amounts(invoice: &Value) -> Vec<String> {
    invoice["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| l["amount"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Amounts compare as decimals ("77.42" == "77.420").
pub fn same_amount(a: &Value, b: &str) -> bool {
    use std::str::FromStr;
    match (
        a.as_str().map(rust_decimal::Decimal::from_str),
        rust_decimal::Decimal::from_str(b),
    ) {
        (Some(Ok(x)), Ok(y)) => x == y,
        _ => false,
    }
}
