//! `api --demo`: a guided tour through the real API and workers.
//!
//! Creates an organization on a test clock at 2026-01-01, a catalog (flat,
//! hybrid, graduated and trial plans), four customers, sends usage, upgrades
//! one customer mid-January, advances the clock three months through the
//! normal queues and workers, and returns the invoices produced. Every call
//! goes through the same GraphQL schema the server exposes.

use std::time::{Duration, Instant};

use async_graphql::{Request, Variables};
use serde_json::{Value, json};

use crate::graphql::ValoraSchema;
use crate::graphql::auth::{self, Auth};
use crate::graphql::loaders::Loaders;
use crate::state::AppState;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("GraphQL: {0}")]
    GraphQl(String),
    #[error("the test clock did not settle within {0:?}")]
    Timeout(Duration),
    #[error("the server has no bootstrap token")]
    NoBootstrapToken,
}

/// What the demo produced.
pub struct DemoOutcome {
    /// The demo organization's ADMIN key, to explore in GraphiQL.
    pub api_key: String,
    /// Invoices: customer, number, status, period, total, lines.
    pub invoices: Vec<Value>,
}

/// An in-process GraphQL client acting with one bearer token.
struct Caller<'a> {
    schema: &'a ValoraSchema,
    auth: Auth,
}

impl Caller<'_> {
    async fn call(&self, query: &str, variables: Value) -> Result<Value, DemoError> {
        let request = Request::new(query)
            .variables(Variables::from_json(variables))
            .data(self.auth.clone())
            .data(Loaders::default());
        let response = self.schema.execute(request).await;
        if let Some(error) = response.errors.first() {
            return Err(DemoError::GraphQl(format!(
                "{} (in {query})",
                error.message
            )));
        }
        response
            .data
            .into_json()
            .map_err(|e| DemoError::GraphQl(e.to_string()))
    }

    /// Moves the test clock and waits until the workers have done everything due.
    async fn advance(&self, to: &str) -> Result<(), DemoError> {
        self.call(
            "mutation($to: DateTime!) { advanceTestClock(to: $to) { status } }",
            json!({ "to": to }),
        )
        .await?;
        let limit = Duration::from_secs(120);
        let started = Instant::now();
        loop {
            let data = self
                .call("{ organization { testClock { status } } }", json!({}))
                .await?;
            if data["organization"]["testClock"]["status"] == "READY" {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(DemoError::Timeout(limit));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn caller<'a>(schema: &'a ValoraSchema, token: &str) -> Result<Caller<'a>, DemoError> {
    let state = schema
        .data::<AppState>()
        .ok_or_else(|| DemoError::GraphQl("schema without state".into()))?;
    let auth = auth::resolve(&state.db, Some(&format!("Bearer {token}")))
        .await
        .map_err(|e| DemoError::GraphQl(e.message))?;
    Ok(Caller { schema, auth })
}

fn usage(customer: &str, key: &str, value: &str, at: &str) -> Value {
    json!({ "idempotencyKey": key, "customerExternalId": customer,
            "meterCode": "api_calls", "value": value, "timestamp": at })
}

/// Runs the tour against `schema`.
pub async fn run(schema: &ValoraSchema) -> Result<DemoOutcome, DemoError> {
    let token = schema
        .data::<AppState>()
        .and_then(|s| s.config.admin_token.clone())
        .ok_or(DemoError::NoBootstrapToken)?;
    let bootstrap = caller(schema, &token).await?;
    let created = bootstrap
        .call(
            "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { apiKey } }",
            json!({ "input": { "name": "Demo Coffee Co", "currency": "USD",
                               "testClockStart": "2026-01-01T00:00:00Z", "netTermsDays": 30 } }),
        )
        .await?;
    let api_key = created["createOrganization"]["apiKey"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let admin = caller(schema, &api_key).await?;

    admin
        .call(
            r#"mutation { createMeter(input: { code: "api_calls", name: "API calls", aggregation: SUM }) { id } }"#,
            json!({}),
        )
        .await?;
    let plans = [
        json!({ "code": "starter", "name": "Starter", "interval": "MONTH",
                "prices": [{ "model": "FLAT", "unitAmount": "29.00", "description": "Starter seat" }] }),
        json!({ "code": "pro", "name": "Pro (hybrid)", "interval": "MONTH",
                "prices": [{ "model": "FLAT", "unitAmount": "99.00", "description": "Pro seat" },
                           { "model": "PER_UNIT", "timing": "IN_ARREARS", "meterCode": "api_calls",
                             "unitAmount": "0.002", "description": "API calls" }] }),
        json!({ "code": "scale", "name": "Scale (graduated)", "interval": "MONTH",
                "prices": [{ "model": "GRADUATED", "timing": "IN_ARREARS", "meterCode": "api_calls",
                             "description": "API calls, graduated",
                             "tiers": [{ "upTo": "10000", "unitAmount": "0.01" },
                                       { "upTo": "100000", "unitAmount": "0.005" },
                                       { "upTo": null, "unitAmount": "0.001" }] }] }),
        json!({ "code": "team", "name": "Team (14-day trial)", "interval": "MONTH", "trialDays": 14,
                "prices": [{ "model": "FLAT", "unitAmount": "199.00", "description": "Team plan" }] }),
    ];
    let mut plan_ids = Vec::new();
    for plan in plans {
        let data = admin
            .call(
                "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
                json!({ "input": plan }),
            )
            .await?;
        plan_ids.push(
            data["createPlan"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let mut subscriptions = Vec::new();
    for (customer, plan) in ["alice", "bob", "carol", "dave"].iter().zip(&plan_ids) {
        let data = admin
            .call(
                "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
                json!({ "input": { "externalId": customer, "name": customer, "email": format!("{customer}@example.com") } }),
            )
            .await?;
        let customer_id = data["createCustomer"]["id"].as_str().unwrap_or_default();
        let data = admin
            .call(
                "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) { id } }",
                json!({ "input": { "customerId": customer_id, "planId": plan } }),
            )
            .await?;
        subscriptions.push(
            data["createSubscription"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }

    admin.advance("2026-01-16T00:00:00Z").await?;
    admin
        .call(
            "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted } }",
            json!({ "events": [
                usage("bob", "bob-jan", "12000", "2026-01-10T12:00:00Z"),
                usage("carol", "carol-jan", "150000", "2026-01-12T12:00:00Z"),
            ] }),
        )
        .await?;
    // Alice upgrades from Starter to Pro mid-January: prorated on February's invoice.
    admin
        .call(
            "mutation($input: ChangeSubscriptionPlanInput!) { changeSubscriptionPlan(input: $input) { id } }",
            json!({ "input": { "subscriptionId": subscriptions[0], "planId": plan_ids[1] } }),
        )
        .await?;
    for (month, day) in [("02", "15"), ("03", "15")] {
        admin
            .advance(&format!("2026-{month}-{day}T00:00:00Z"))
            .await?;
        admin
            .call(
                "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted } }",
                json!({ "events": [
                    usage("alice", &format!("alice-{month}"), "3000", &format!("2026-{month}-10T00:00:00Z")),
                    usage("bob", &format!("bob-{month}"), "20000", &format!("2026-{month}-10T00:00:00Z")),
                    usage("carol", &format!("carol-{month}"), "80000", &format!("2026-{month}-10T00:00:00Z")),
                ] }),
            )
            .await?;
    }
    admin.advance("2026-04-01T00:00:00Z").await?;

    let data = admin
        .call(
            "{ invoices(first: 100) { nodes { number status total periodStart periodEnd
               customer { name } lines { kind description amount } } } }",
            json!({}),
        )
        .await?;
    let mut invoices = data["invoices"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    invoices.sort_by_key(|i| i["number"].as_str().unwrap_or("~").to_string());
    Ok(DemoOutcome { api_key, invoices })
}

/// The invoices as a text table.
pub fn table(invoices: &[Value]) -> String {
    let day = |v: &Value| {
        v.as_str()
            .map_or("-".to_string(), |s| s.chars().take(10).collect())
    };
    let mut out = format!(
        "{:<17} {:<8} {:<6} {:<10} {:<10} {:>10}  {}\n",
        "number", "customer", "status", "from", "to", "total", "lines"
    );
    for invoice in invoices {
        let lines: Vec<String> = invoice["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {}",
                            l["kind"].as_str().unwrap_or(""),
                            l["amount"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<17} {:<8} {:<6} {:<10} {:<10} {:>10}  {}\n",
            invoice["number"].as_str().unwrap_or("(draft)"),
            invoice["customer"]["name"].as_str().unwrap_or(""),
            invoice["status"].as_str().unwrap_or(""),
            day(&invoice["periodStart"]),
            day(&invoice["periodEnd"]),
            invoice["total"].as_str().unwrap_or(""),
            lines.join(", "),
        ));
    }
    out
}
