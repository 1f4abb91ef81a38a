//! SPEC §3 examples end to end: GraphQL in, workers and test clock in the
//! middle, invoices out — on SQLite + embedded queue and PostgreSQL + Redis.
//! Every expected amount is computed by hand in the comments.

use entity::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use tests::TestEnv;
use tests::scenario::{Scenario, line_amounts, same_amount};

const JAN_1: &str = "2026-01-01T00:00:00Z";

/// An organization on a test clock; long net terms so nothing goes overdue by accident.
fn org_at(start: &str) -> Value {
    json!({ "testClockStart": start, "netTermsDays": 90 })
}

fn flat_plan(code: &str, amount: &str, trial_days: i64) -> Value {
    json!({
        "code": code, "name": code, "interval": "MONTH", "trialDays": trial_days,
        "prices": [{ "model": "FLAT", "unitAmount": amount }]
    })
}

fn assert_amount(value: &Value, expected: &str, what: &str) {
    assert!(
        same_amount(value, expected),
        "{what}: expected {expected}, got {value}"
    );
}

/// RFC 3339 instants compare by their UTC date and time, whatever the suffix.
fn assert_instant(value: &Value, expected: &str) {
    let text = value.as_str().unwrap_or("");
    assert!(
        text.starts_with(expected),
        "expected {expected}, got {value}"
    );
}

fn assert_has_line(invoice: &Value, kind: &str, amount: &str) {
    let found = invoice["lines"].as_array().is_some_and(|lines| {
        lines
            .iter()
            .any(|l| l["kind"] == kind && same_amount(&l["amount"], amount))
    });
    assert!(found, "no {kind} line of {amount} in {invoice}");
}

/// The audit trail of one invoice: each event's action and whether it has a
/// `before` snapshot, in chain order.
async fn invoice_trail(s: &Scenario, invoice: &Value) -> Vec<(String, bool)> {
    let id = invoice["id"].as_str().unwrap_or_default();
    audit_event::Entity::find()
        .filter(audit_event::Column::EntityId.eq(id))
        .order_by_asc(audit_event::Column::Seq)
        .all(&s.server.db)
        .await
        .expect("audit events")
        .into_iter()
        .map(|e| (e.action, e.before.is_some_and(|b| !b.is_null())))
        .collect()
}

fn usage(customer: &str, meter: &str, key: &str, value: &str, at: &str) -> Value {
    json!({ "idempotencyKey": key, "customerExternalId": customer, "meterCode": meter, "value": value, "timestamp": at })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourteen_day_trial_then_monthly() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "100.00", 14)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        assert_eq!(s.subscription(&sub).await["status"], "TRIALING");
        s.advance("2026-01-14T23:59:59Z").await;
        assert!(
            s.invoices(&sub).await.is_empty(),
            "no charge during the trial"
        );

        // Trial ends Jan 15: ACTIVE, first period [Jan 15, Feb 15) billed in advance.
        s.advance("2026-01-15T00:00:00Z").await;
        let state = s.subscription(&sub).await;
        assert_eq!(state["status"], "ACTIVE");
        assert_instant(&state["currentPeriodStart"], "2026-01-15T00:00:00");
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 1);
        assert_amount(&invoices[0]["total"], "100.00", "first invoice");
        assert_eq!(invoices[0]["status"], "OPEN");
        // Finalized by the step that wrote it (no grace period): one event,
        // with nothing before it; it was never a DRAFT outside that step.
        assert_eq!(
            invoice_trail(&s, &invoices[0]).await,
            [("invoice.finalized".to_string(), false)]
        );

        // Feb 15 closes the first period and bills [Feb 15, Mar 15).
        s.advance("2026-02-15T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 2, "{invoices:?}");
        assert_amount(&invoices[1]["total"], "100.00", "second invoice");
        let numbers: Vec<&str> = invoices
            .iter()
            .filter_map(|i| i["number"].as_str())
            .collect();
        assert!(
            numbers[0].ends_with("-2026-000001") && numbers[1].ends_with("-2026-000002"),
            "{numbers:?}"
        );
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn january_upgrade_on_the_16th_prorates_on_the_february_invoice() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        let customer = s.create_customer("acme").await;
        let old = s.create_plan(flat_plan("a", "100.00", 0)).await;
        let new = s.create_plan(flat_plan("b", "150.00", 0)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": old }))
            .await;
        s.advance("2026-01-16T00:00:00Z").await;
        s.gql(
            "mutation($input: ChangeSubscriptionPlanInput!) { changeSubscriptionPlan(input: $input) { id } }",
            json!({ "input": { "subscriptionId": sub, "planId": new } }),
        )
        .await;
        s.advance("2026-01-16T00:00:00Z").await; // let the proration job run

        // D = 31, R = 16: −round(100 × 16/31) = −51.61, +round(150 × 16/31) = +77.42;
        // plus February in advance at 150.00: 175.81.
        let upcoming = s
            .gql(
                "query($id: ID!) { upcomingInvoice(subscriptionId: $id) { total lines { kind amount } } }",
                json!({ "id": sub }),
            )
            .await;
        assert_amount(
            &upcoming["upcomingInvoice"]["total"],
            "175.81",
            "upcoming invoice",
        );

        s.advance("2026-02-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 2, "{invoices:?}");
        let february = &invoices[1];
        assert_has_line(february, "PRORATION", "-51.61");
        assert_has_line(february, "PRORATION", "77.42");
        assert_has_line(february, "SUBSCRIPTION", "150.00");
        assert_amount(&february["total"], "175.81", "February invoice");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anniversary_on_january_31_clamps_and_returns_for_six_months() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at("2026-01-31T00:00:00Z")).await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "10.00", 0)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        s.advance("2026-07-31T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        let starts: Vec<String> = invoices
            .iter()
            .map(|i| i["lines"][0]["periodStart"].as_str().unwrap_or("?")[..10].to_string())
            .collect();
        assert_eq!(
            starts,
            [
                "2026-01-31",
                "2026-02-28",
                "2026-03-31",
                "2026-04-30",
                "2026-05-31",
                "2026-06-30",
                "2026-07-31"
            ],
            "Jan 31 → Feb 28 → Mar 31 …"
        );
        // Gapless per organization; during catch-up finalizations may commit in
        // either order, so numbers follow commit order, not period order.
        let mut numbers: Vec<&str> = invoices
            .iter()
            .filter_map(|i| i["number"].as_str())
            .collect();
        numbers.sort();
        let expected: Vec<String> = (1..=7).map(|n| format!("INV-2026-{n:06}")).collect();
        assert_eq!(numbers, expected, "gapless numbers");
        for invoice in &invoices {
            assert_amount(&invoice["total"], "10.00", "monthly fee");
        }
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_anchor_prorates_a_mid_month_start() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at("2026-01-16T00:00:00Z")).await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "100.00", 0)).await;
        let sub = s
            .subscribe(
                json!({ "customerId": customer, "planId": plan, "billingAnchor": "CALENDAR" }),
            )
            .await;
        s.advance("2026-01-16T00:00:00Z").await;
        // [Jan 16, Feb 1): 16 of January's 31 days of 100.00 = 51.61.
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 1, "{invoices:?}");
        assert_amount(&invoices[0]["total"], "51.61", "partial first period");
        s.advance("2026-02-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_amount(&invoices[1]["total"], "100.00", "first full calendar month");
        assert_instant(
            &invoices[1]["lines"][0]["periodStart"],
            "2026-02-01T00:00:00",
        );
        s.finish().await;
    }
}

async fn hybrid(s: &Scenario) -> (String, String) {
    s.create_meter("api_calls", "SUM").await;
    let customer = s.create_customer("acme").await;
    let plan = s
        .create_plan(json!({
            "code": "hybrid", "name": "Hybrid", "interval": "MONTH",
            "prices": [
                { "model": "FLAT", "unitAmount": "20.00" },
                { "model": "PER_UNIT", "timing": "IN_ARREARS", "meterCode": "api_calls", "unitAmount": "0.10" }
            ]
        }))
        .await;
    let sub = s
        .subscribe(json!({ "customerId": customer, "planId": plan }))
        .await;
    (customer, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_flat_plus_per_unit() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        let (_, sub) = hybrid(&s).await;
        s.advance("2026-01-25T00:00:00Z").await;
        s.ingest(json!([
            usage("acme", "api_calls", "e1", "50", "2026-01-05T10:00:00Z"),
            usage("acme", "api_calls", "e2", "60", "2026-01-10T10:00:00Z"),
            usage("acme", "api_calls", "e3", "40", "2026-01-20T10:00:00Z"),
        ]))
        .await;
        s.advance("2026-02-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 2, "{invoices:?}");
        assert_amount(&invoices[0]["total"], "20.00", "January in advance");
        // 150 calls × 0.10 = 15.00 for January, plus February's 20.00 in advance.
        assert_has_line(&invoices[1], "USAGE", "15.00");
        assert_has_line(&invoices[1], "SUBSCRIPTION", "20.00");
        assert_amount(&invoices[1]["total"], "35.00", "February invoice");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graduated_and_volume_usage() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        s.create_meter("g", "SUM").await;
        s.create_meter("v", "SUM").await;
        let customer = s.create_customer("acme").await;
        let tiers = json!([
            { "upTo": "1000", "unitAmount": "0.10" },
            { "upTo": "10000", "unitAmount": "0.05" },
            { "upTo": null, "unitAmount": "0.01" }
        ]);
        let plan = s
            .create_plan(json!({
                "code": "tiered", "name": "Tiered", "interval": "MONTH",
                "prices": [
                    { "model": "GRADUATED", "timing": "IN_ARREARS", "meterCode": "g", "tiers": tiers },
                    { "model": "VOLUME", "timing": "IN_ARREARS", "meterCode": "v", "tiers": tiers }
                ]
            }))
            .await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        s.advance("2026-01-20T00:00:00Z").await;
        assert!(s.invoices(&sub).await.is_empty(), "no lines, no invoice");
        s.ingest(json!([
            usage("acme", "g", "g1", "15000", "2026-01-10T00:00:00Z"),
            usage("acme", "v", "v1", "15000", "2026-01-10T00:00:00Z"),
        ]))
        .await;
        s.advance("2026-02-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 1, "{invoices:?}");
        // Graduated: 1000×0.10 + 9000×0.05 + 5000×0.01 = 100 + 450 + 50 = 600.00.
        // Volume: all 15,000 at the last tier's 0.01 = 150.00.
        assert_has_line(&invoices[0], "USAGE", "600.00");
        assert_has_line(&invoices[0], "USAGE", "150.00");
        assert_amount(&invoices[0]["total"], "750.00", "usage invoice");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_at_period_end_bills_arrears_only() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        let (_, sub) = hybrid(&s).await;
        s.advance("2026-01-06T00:00:00Z").await;
        s.ingest(json!([usage(
            "acme",
            "api_calls",
            "e1",
            "100",
            "2026-01-05T00:00:00Z"
        )]))
        .await;
        s.advance("2026-01-10T00:00:00Z").await;
        s.gql(
            "mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) { id } }",
            json!({ "input": { "subscriptionId": sub, "atPeriodEnd": true } }),
        )
        .await;
        s.advance("2026-02-01T00:00:00Z").await;
        let state = s.subscription(&sub).await;
        assert_eq!(state["status"], "CANCELED");
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 2, "{invoices:?}");
        // Final invoice: January usage 100 × 0.10 = 10.00, no February fee.
        assert_amount(&invoices[1]["total"], "10.00", "final invoice");
        assert_eq!(line_amounts(&invoices[1]).len(), 1, "{}", invoices[1]);
        s.advance("2026-03-01T00:00:00Z").await;
        assert_eq!(s.invoices(&sub).await.len(), 2, "nothing after the end");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_cancel_credits_unused_days() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "100.00", 0)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        s.advance("2026-01-16T00:00:00Z").await;
        s.gql(
            "mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) { id status } }",
            json!({ "input": { "subscriptionId": sub, "atPeriodEnd": false } }),
        )
        .await;
        s.advance("2026-01-16T00:00:00Z").await;
        assert_eq!(s.subscription(&sub).await["status"], "CANCELED");
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 2, "{invoices:?}");
        // 16 unused days of 31 of 100.00: −51.61.
        assert_has_line(&invoices[1], "PRORATION", "-51.61");
        assert_amount(&invoices[1]["total"], "-51.61", "final credit");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_usage_after_finalization_is_billed_next_time() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, org_at(JAN_1)).await;
        let (_, sub) = hybrid(&s).await;
        s.advance("2026-01-06T00:00:00Z").await;
        s.ingest(json!([usage(
            "acme",
            "api_calls",
            "e1",
            "100",
            "2026-01-05T00:00:00Z"
        )]))
        .await;
        s.advance("2026-02-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices[1]["status"], "OPEN");
        assert_amount(&invoices[1]["total"], "30.00", "20.00 + 100 × 0.10");
        // A January event arrives after January's invoice was finalized.
        s.ingest(json!([usage(
            "acme",
            "api_calls",
            "late",
            "50",
            "2026-01-20T00:00:00Z"
        )]))
        .await;
        s.advance("2026-03-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 3, "{invoices:?}");
        assert_amount(
            &invoices[1]["total"],
            "30.00",
            "a finalized invoice never changes",
        );
        // price(150) − price(100) = 5.00, plus March's 20.00 in advance.
        assert_has_line(&invoices[2], "LATE_USAGE", "5.00");
        assert_amount(&invoices[2]["total"], "25.00", "March invoice");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_usage_inside_the_grace_period_lands_on_the_draft() {
    for env in TestEnv::all().await {
        let s = Scenario::start(
            env,
            json!({ "testClockStart": JAN_1, "netTermsDays": 90, "gracePeriodHours": 24 }),
        )
        .await;
        let (_, sub) = hybrid(&s).await;
        s.advance("2026-01-06T00:00:00Z").await;
        s.ingest(json!([usage(
            "acme",
            "api_calls",
            "e1",
            "100",
            "2026-01-05T00:00:00Z"
        )]))
        .await;
        s.advance("2026-02-01T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices[1]["status"], "DRAFT", "inside the grace period");
        s.ingest(json!([usage(
            "acme",
            "api_calls",
            "late",
            "50",
            "2026-01-31T23:00:00Z"
        )]))
        .await;
        s.advance("2026-02-02T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_eq!(invoices.len(), 2, "{invoices:?}");
        assert_eq!(invoices[1]["status"], "OPEN");
        // 150 × 0.10 = 15.00 on the January invoice itself, + 20.00 February.
        assert_has_line(&invoices[1], "USAGE", "15.00");
        assert_amount(&invoices[1]["total"], "35.00", "recomputed at finalization");
        // A draft that waited for its grace period: drafted, then finalized
        // from the stored draft.
        assert_eq!(
            invoice_trail(&s, &invoices[1]).await,
            [
                ("invoice.drafted".to_string(), false),
                ("invoice.finalized".to_string(), true)
            ]
        );
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_invoice_goes_past_due_and_payment_restores_active() {
    for env in TestEnv::all().await {
        let s = Scenario::start(env, json!({ "testClockStart": JAN_1, "netTermsDays": 10 })).await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "100.00", 0)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        s.advance("2026-01-11T00:00:00Z").await;
        let invoices = s.invoices(&sub).await;
        assert_instant(&invoices[0]["dueAt"], "2026-01-11T00:00:00");
        assert_eq!(s.subscription(&sub).await["status"], "PAST_DUE");
        let id = invoices[0]["id"].as_str().expect("invoice id").to_string();
        s.gql(
            "mutation($id: ID!) { markInvoicePaid(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
        assert_eq!(s.subscription(&sub).await["status"], "ACTIVE");
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_past_the_limit_cancels_the_subscription() {
    for env in TestEnv::all().await {
        let s = Scenario::start(
            env,
            json!({ "testClockStart": JAN_1, "netTermsDays": 10, "cancelAfterPastDueDays": 5 }),
        )
        .await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "100.00", 0)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        // Due Jan 11: PAST_DUE then; still unpaid five days later: canceled as of Jan 16.
        s.advance("2026-01-12T00:00:00Z").await;
        assert_eq!(s.subscription(&sub).await["status"], "PAST_DUE");
        s.advance("2026-01-15T23:59:59Z").await;
        assert_eq!(
            s.subscription(&sub).await["status"],
            "PAST_DUE",
            "not before the limit"
        );
        s.advance("2026-01-20T00:00:00Z").await;
        let state = s.subscription(&sub).await;
        assert_eq!(state["status"], "CANCELED");
        assert_instant(&state["canceledAt"], "2026-01-16T00:00:00");
        // No credit for the unpaid, unused days: no final invoice here.
        assert_eq!(s.invoices(&sub).await.len(), 1);
        s.advance("2026-03-01T00:00:00Z").await;
        assert_eq!(
            s.invoices(&sub).await.len(),
            1,
            "nothing billed after cancellation"
        );
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_before_the_limit_keeps_the_subscription() {
    for env in TestEnv::all().await {
        let s = Scenario::start(
            env,
            json!({ "testClockStart": JAN_1, "netTermsDays": 10, "cancelAfterPastDueDays": 5 }),
        )
        .await;
        let customer = s.create_customer("acme").await;
        let plan = s.create_plan(flat_plan("basic", "100.00", 0)).await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        s.advance("2026-01-12T00:00:00Z").await;
        let id = s.invoices(&sub).await[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        s.gql(
            "mutation($id: ID!) { markInvoicePaid(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
        s.advance("2026-01-20T00:00:00Z").await;
        assert_eq!(s.subscription(&sub).await["status"], "ACTIVE");
        s.finish().await;
    }
}
