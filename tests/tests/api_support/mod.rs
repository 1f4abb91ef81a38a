//! Shared helpers of the `api_*` end-to-end tests: start a server on a test
//! environment, bootstrap organizations, run GraphQL and read error codes.
#![allow(dead_code)]

use api::server::RunningServer;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tests::TestEnv;
use tests::http::Client;

pub struct Api {
    pub server: RunningServer,
    pub anon: Client,
    pub admin_token: String,
}

impl Api {
    pub async fn start(env: &TestEnv) -> Api {
        Api::start_with(env, env.config.clone()).await
    }

    /// The API without the workers it embeds on SQLite, for tests that
    /// count rows or compare snapshots: a start step would otherwise write a
    /// subscription's first invoice between their reads.
    pub async fn start_alone(env: &TestEnv) -> Api {
        let mut config = env.config.clone();
        config.embedded_workers = false;
        Api::start_with(env, config).await
    }

    async fn start_with(env: &TestEnv, config: worker::Config) -> Api {
        let server = api::server::start(config)
            .await
            .unwrap_or_else(|e| panic!("{:?}: server starts: {e}", env.backend));
        let anon = Client::new(server.addr);
        let admin_token = env
            .config
            .admin_token
            .clone()
            .expect("tests set VALORA_ADMIN_TOKEN");
        Api {
            server,
            anon,
            admin_token,
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.server.db
    }

    /// A new organization (USD, test clock at `clock` when given) and a
    /// client holding its first ADMIN key.
    pub async fn org(&self, name: &str, clock: Option<&str>) -> (String, Client) {
        let answer = self
            .anon
            .with_key(&self.admin_token)
            .graphql(
                "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) {
                    organization { id name currency timezone testClock { frozenTime status } }
                    apiKey } }",
                json!({"input": {"name": name, "currency": "USD", "testClockStart": clock}}),
            )
            .await;
        let payload = &ok(&answer)["createOrganization"];
        let key = payload["apiKey"].as_str().expect("apiKey").to_string();
        (
            payload["organization"]["id"]
                .as_str()
                .expect("id")
                .to_string(),
            self.anon.with_key(&key),
        )
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("server stops");
    }
}

/// `data` of a successful answer; panics with the errors otherwise.
pub fn ok(answer: &Value) -> &Value {
    assert!(
        answer.get("errors").is_none_or(Value::is_null),
        "unexpected errors: {answer}"
    );
    &answer["data"]
}

/// `errors[0].extensions.code`.
pub fn code(answer: &Value) -> String {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error with a code: {answer}"))
        .to_string()
}

/// `errors[0].message`.
pub fn message(answer: &Value) -> String {
    answer["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Rows in `table`.
pub async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .expect("count query")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

/// Row counts of every table a mutation may write.
pub async fn snapshot(db: &DatabaseConnection) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for table in [
        "organizations",
        "api_keys",
        "customers",
        "meters",
        "plans",
        "plan_versions",
        "prices",
        "price_tiers",
        "subscriptions",
        "subscription_changes",
        "usage_events",
        "invoices",
        "invoice_lines",
        "invoice_sequences",
        "idempotency_keys",
        "outbox",
        "audit_events",
    ] {
        out.push((table, count(db, table).await));
    }
    out
}

pub async fn create_customer(client: &Client, external_id: &str) -> String {
    let answer = client
        .graphql(
            "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
            json!({"input": {"externalId": external_id, "name": external_id}}),
        )
        .await;
    ok(&answer)["createCustomer"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub async fn create_meter(client: &Client, code: &str, aggregation: &str) -> String {
    let answer = client
        .graphql(
            "mutation($input: CreateMeterInput!) { createMeter(input: $input) { id } }",
            json!({"input": {"code": code, "name": code, "aggregation": aggregation}}),
        )
        .await;
    ok(&answer)["createMeter"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// A monthly plan with the given prices; returns its id.
pub async fn create_plan(client: &Client, code: &str, prices: Value) -> String {
    create_plan_with(client, code, 0, prices).await
}

pub async fn create_plan_with(
    client: &Client,
    code: &str,
    trial_days: i32,
    prices: Value,
) -> String {
    let answer = client
        .graphql(
            "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
            json!({"input": {"code": code, "name": code, "interval": "MONTH",
                             "trialDays": trial_days, "prices": prices}}),
        )
        .await;
    ok(&answer)["createPlan"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub fn flat(amount: &str) -> Value {
    json!([{"model": "FLAT", "unitAmount": amount, "description": "Base"}])
}

pub async fn create_subscription(client: &Client, customer: &str, plan: &str) -> String {
    let answer = client
        .graphql(
            "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) { id } }",
            json!({"input": {"customerId": customer, "planId": plan}}),
        )
        .await;
    ok(&answer)["createSubscription"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Inserts a DRAFT invoice with lines `(description, quantity, amount_minor)`
/// directly (the workers that create invoices are not part of these tests).
pub async fn insert_draft(
    db: &DatabaseConnection,
    org: &str,
    customer: &str,
    subscription: Option<&str>,
    lines: &[(&str, &str, i64)],
) -> String {
    use chrono::{TimeZone, Utc};
    use entity::{Dec, InvoiceKind, InvoiceLineKind, InvoiceStatus, invoice, invoice_line};
    use sea_orm::{ActiveModelTrait, Set};

    let id = uuid::Uuid::now_v7().to_string();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let total: i64 = lines.iter().map(|l| l.2).sum();
    invoice::ActiveModel {
        id: Set(id.clone()),
        organization_id: Set(org.into()),
        customer_id: Set(customer.into()),
        subscription_id: Set(subscription.map(Into::into)),
        kind: Set(InvoiceKind::Periodic),
        status: Set(InvoiceStatus::Draft),
        currency: Set("USD".into()),
        billing_key: Set(format!("test:{id}")),
        period_start: Set(Some(start)),
        period_end: Set(Some(end)),
        subtotal_minor: Set(total),
        total_minor: Set(total),
        number: Set(None),
        number_year: Set(None),
        number_seq: Set(None),
        finalize_at: Set(None),
        created_at: Set(start),
        finalized_at: Set(None),
        due_at: Set(None),
        paid_at: Set(None),
        voided_at: Set(None),
        content_hash: Set(None),
    }
    .insert(db)
    .await
    .expect("insert draft invoice");
    for (position, (description, quantity, amount)) in lines.iter().enumerate() {
        invoice_line::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            organization_id: Set(org.into()),
            invoice_id: Set(id.clone()),
            position: Set(position as i32),
            kind: Set(InvoiceLineKind::Subscription),
            description: Set(description.to_string()),
            price_id: Set(None),
            quantity: Set(quantity.parse::<Dec>().expect("quantity")),
            unit_amount: Set(None),
            amount_minor: Set(*amount),
            period_start: Set(start),
            period_end: Set(end),
        }
        .insert(db)
        .await
        .expect("insert invoice line");
    }
    id
}

/// One text column of every row of `sql`.
pub async fn strings(db: &DatabaseConnection, sql: &str, column: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_string(),
    ))
    .await
    .expect("query")
    .into_iter()
    .map(|row| row.try_get::<String>("", column).expect("text column"))
    .collect()
}
