//! Invoices end to end: finalization with gapless numbers, the state
//! machine (legal and illegal transitions), and `upcomingInvoice` computed
//! by the billing core for a hybrid plan with usage. DRAFT invoices are
//! inserted directly: the workers that create them are not part of this test.

mod api_support;

use api_support::{
    Api, code, create_customer, create_meter, create_subscription, insert_draft, message, ok,
    snapshot, strings,
};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tests::TestEnv;

const FIELDS: &str = "id number status currency subtotal total finalizedAt dueAt paidAt contentHash
    periodStart periodEnd customer { externalId } subscription { id status }
    lines { kind description quantity unitAmount amount periodStart periodEnd }";

async fn act(client: &tests::http::Client, mutation: &str, id: &str) -> Value {
    client
        .graphql(
            &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ {FIELDS} }} }}"),
            json!({"id": id}),
        )
        .await
}

#[tokio::test]
async fn finalize_numbers_and_transitions() {
    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (org, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        let operator_key = ok(&admin
            .graphql(
                "mutation { createApiKey(role: OPERATOR) { apiKey } }",
                json!({}),
            )
            .await)["createApiKey"]["apiKey"]
            .as_str()
            .unwrap()
            .to_string();
        let operator = api.anon.with_key(&operator_key);
        let customer = create_customer(&admin, "cust").await;
        let plan = api_support::create_plan(&admin, "basic", api_support::flat("100.00")).await;
        let sub = create_subscription(&admin, &customer, &plan).await;

        let lines = [("Base", "1", 10_000), ("Extra", "2.5", 5_050)];
        let first = insert_draft(api.db(), &org, &customer, Some(&sub), &lines).await;
        let second = insert_draft(api.db(), &org, &customer, Some(&sub), &lines).await;
        let zero = insert_draft(api.db(), &org, &customer, None, &[("Free", "1", 0)]).await;
        let fourth =
            insert_draft(api.db(), &org, &customer, Some(&sub), &[("Base", "1", 100)]).await;

        let answer = act(&operator, "finalizeInvoice", &first).await;
        let inv = &ok(&answer)["finalizeInvoice"];
        assert_eq!(inv["number"], "INV-2026-000001");
        assert_eq!(inv["status"], "OPEN");
        assert_eq!(inv["total"], "150.5");
        assert_eq!(inv["subtotal"], "150.5");
        assert_eq!(inv["finalizedAt"], "2026-01-16T00:00:00Z");
        assert_eq!(inv["dueAt"], "2026-02-15T00:00:00Z", "netTermsDays 30");
        assert_eq!(inv["customer"]["externalId"], "cust");
        assert_eq!(inv["lines"][1]["quantity"], "2.5");
        assert_eq!(inv["lines"][1]["amount"], "50.5");
        let hash = inv["contentHash"]
            .as_str()
            .expect("content hash")
            .to_string();
        assert_eq!(hash.len(), 64);
        let overdue = strings(
            api.db(),
            &format!("SELECT job_key FROM outbox WHERE subject_id = '{first}'"),
            "job_key",
        )
        .await;
        assert_eq!(overdue, vec![format!("invoice_overdue:{first}:overdue")]);

        let answer = act(&admin, "finalizeInvoice", &second).await;
        let inv = &ok(&answer)["finalizeInvoice"];
        assert_eq!(inv["number"], "INV-2026-000002", "gapless");
        assert_eq!(inv["contentHash"], hash.as_str(), "same lines, same hash");

        // Zero total: PAID at once, no overdue job.
        let answer = act(&admin, "finalizeInvoice", &zero).await;
        let inv = &ok(&answer)["finalizeInvoice"];
        assert_eq!(inv["number"], "INV-2026-000003");
        assert_eq!(inv["status"], "PAID");
        assert_eq!(inv["paidAt"], "2026-01-16T00:00:00Z");

        // Illegal transitions name the current state and change nothing.
        let before = snapshot(api.db()).await;
        for (mutation, id, state) in [
            ("finalizeInvoice", &first, "OPEN"),
            ("voidInvoice", &fourth, "DRAFT"),
            ("markInvoicePaid", &fourth, "DRAFT"),
            ("markInvoiceUncollectible", &zero, "PAID"),
        ] {
            let answer = act(&admin, mutation, id).await;
            assert_eq!(code(&answer), "BAD_USER_INPUT", "{mutation}: {answer}");
            assert!(message(&answer).contains(state), "{mutation}: {answer}");
        }
        assert_eq!(snapshot(api.db()).await, before);

        // OPEN → VOID, then nothing more.
        let answer = act(&operator, "voidInvoice", &first).await;
        assert_eq!(ok(&answer)["voidInvoice"]["status"], "VOID");
        let answer = act(&admin, "markInvoicePaid", &first).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");
        assert!(message(&answer).contains("VOID"));

        // OPEN → UNCOLLECTIBLE.
        let answer = act(&admin, "markInvoiceUncollectible", &second).await;
        assert_eq!(
            ok(&answer)["markInvoiceUncollectible"]["status"],
            "UNCOLLECTIBLE"
        );

        // OPEN → PAID returns a PAST_DUE subscription to ACTIVE.
        ok(&act(&admin, "finalizeInvoice", &fourth).await);
        api.db()
            .execute_unprepared(&format!(
                "UPDATE subscriptions SET status = 'PAST_DUE' WHERE id = '{sub}'"
            ))
            .await
            .unwrap();
        let answer = admin
            .graphql(
                &format!("mutation($id: ID!) {{ markInvoicePaid(id: $id, paidAt: \"2026-01-10T08:00:00Z\") {{ {FIELDS} }} }}"),
                json!({"id": fourth}),
            )
            .await;
        let inv = &ok(&answer)["markInvoicePaid"];
        assert_eq!(inv["status"], "PAID");
        assert_eq!(inv["paidAt"], "2026-01-10T08:00:00Z");
        assert_eq!(inv["subscription"]["status"], "ACTIVE");
        assert_eq!(inv["number"], "INV-2026-000004");

        // Reads and filters.
        let answer = admin
            .graphql(
                "query($s: ID!) { invoices(subscriptionId: $s, first: 2) { totalCount pageInfo { hasNextPage } nodes { number } }
                                  paid: invoices(status: PAID) { totalCount } }",
                json!({"s": sub}),
            )
            .await;
        let data = ok(&answer);
        assert_eq!(data["invoices"]["totalCount"], 3);
        assert_eq!(data["invoices"]["pageInfo"]["hasNextPage"], true);
        assert_eq!(data["paid"]["totalCount"], 2);
        let answer = admin
            .graphql("{ invoices(first: 10) { nodes { number customer { externalId } lines { description amount } } } }", json!({}))
            .await;
        let nodes = ok(&answer)["invoices"]["nodes"].as_array().unwrap().clone();
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0]["customer"]["externalId"], "cust");
        assert_eq!(
            nodes[0]["lines"],
            json!([{"description": "Base", "amount": "100"}, {"description": "Extra", "amount": "50.5"}])
        );
        assert_eq!(
            nodes[2]["lines"],
            json!([{"description": "Free", "amount": "0"}])
        );

        // Past six digits the number grows (no wrapping, no truncation).
        api.db()
            .execute_unprepared(&format!(
                "UPDATE invoice_sequences SET last_seq = 999999 WHERE organization_id = '{org}'"
            ))
            .await
            .unwrap();
        let millionth =
            insert_draft(api.db(), &org, &customer, Some(&sub), &[("Base", "1", 100)]).await;
        let answer = act(&admin, "finalizeInvoice", &millionth).await;
        assert_eq!(ok(&answer)["finalizeInvoice"]["number"], "INV-2026-1000000");

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn upcoming_invoice_of_a_hybrid_plan() {
    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (_, admin) = api.org("Acme", Some("2026-01-01T00:00:00Z")).await;
        let customer = create_customer(&admin, "cust").await;
        create_meter(&admin, "calls", "SUM").await;
        create_meter(&admin, "gb", "MAX").await;
        let plan = api_support::create_plan(
            &admin,
            "hybrid",
            json!([
                {"model": "FLAT", "unitAmount": "100.00", "description": "Base"},
                {"model": "PER_UNIT", "meterCode": "calls", "unitAmount": "0.0004", "description": "API calls"},
                {"model": "GRADUATED", "meterCode": "gb", "description": "Storage", "tiers": [
                    {"upTo": "10", "unitAmount": "1"},
                    {"upTo": null, "unitAmount": "0.5", "flatAmount": "2"}]}
            ]),
        )
        .await;
        let sub = create_subscription(&admin, &customer, &plan).await;
        let answer = admin
            .graphql(
                "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted } }",
                json!({"events": [
                    {"idempotencyKey": "a", "customerExternalId": "cust", "meterCode": "calls", "value": "10000", "timestamp": "2026-01-01T00:00:00Z"},
                    {"idempotencyKey": "b", "customerExternalId": "cust", "meterCode": "calls", "value": "2345", "timestamp": "2026-01-01T00:01:00Z"},
                    {"idempotencyKey": "c", "customerExternalId": "cust", "meterCode": "gb", "value": "12", "timestamp": "2026-01-01T00:02:00Z"},
                    {"idempotencyKey": "d", "customerExternalId": "cust", "meterCode": "gb", "value": "15", "timestamp": "2026-01-01T00:03:00Z"}
                ]}),
            )
            .await;
        assert_eq!(ok(&answer)["ingestUsage"]["accepted"], 4);

        let before = snapshot(api.db()).await;
        let answer = admin
            .graphql(
                &format!("query($s: ID!) {{ upcomingInvoice(subscriptionId: $s) {{ {FIELDS} }} }}"),
                json!({"s": sub}),
            )
            .await;
        assert_eq!(snapshot(api.db()).await, before, "nothing written");
        let inv = &ok(&answer)["upcomingInvoice"];
        assert_eq!(inv["status"], "DRAFT");
        assert!(inv["number"].is_null());
        let mut lines: Vec<Value> = inv["lines"].as_array().unwrap().clone();
        lines.sort_by_key(|l| l["description"].as_str().unwrap().to_string());
        // calls: 12,345 × 0.0004 = 4.938 → 4.94
        // gb (MAX 15): 10 × 1 + 5 × 0.5 + 2 = 14.50
        // next period's IN_ADVANCE base fee: 100.00 for February.
        assert_eq!(
            lines,
            vec![
                json!({"kind": "SUBSCRIPTION", "description": "1 × Base", "quantity": "1", "unitAmount": "100",
                       "amount": "100", "periodStart": "2026-02-01T00:00:00Z", "periodEnd": "2026-03-01T00:00:00Z"}),
                json!({"kind": "USAGE", "description": "API calls", "quantity": "12345", "unitAmount": "0.0004",
                       "amount": "4.94", "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}),
                json!({"kind": "USAGE", "description": "Storage", "quantity": "15", "unitAmount": null,
                       "amount": "14.5", "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}),
            ]
        );
        assert_eq!(inv["total"], "119.44");
        assert_eq!(inv["periodStart"], "2026-01-01T00:00:00Z");
        assert_eq!(inv["periodEnd"], "2026-03-01T00:00:00Z");
        assert_eq!(inv["subscription"]["id"], sub.as_str());

        let answer = admin
            .graphql(
                "{ upcomingInvoice(subscriptionId: \"nope\") { id } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "NOT_FOUND");

        // In trial: the first invoice at the trial end; canceled: none.
        let trial =
            api_support::create_plan_with(&admin, "trial", 10, api_support::flat("30.00")).await;
        let trialing = create_subscription(&admin, &customer, &trial).await;
        let answer = admin
            .graphql(
                "query($s: ID!) { upcomingInvoice(subscriptionId: $s) { total lines { kind amount periodStart periodEnd } } }",
                json!({"s": trialing}),
            )
            .await;
        assert_eq!(
            ok(&answer)["upcomingInvoice"],
            json!({"total": "30", "lines": [{"kind": "SUBSCRIPTION", "amount": "30",
                   "periodStart": "2026-01-11T00:00:00Z", "periodEnd": "2026-02-11T00:00:00Z"}]})
        );
        ok(&admin
            .graphql(
                "mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s, atPeriodEnd: false}) { id } }",
                json!({"s": trialing}),
            )
            .await);
        let answer = admin
            .graphql(
                "query($s: ID!) { upcomingInvoice(subscriptionId: $s) { id } }",
                json!({"s": trialing}),
            )
            .await;
        assert!(ok(&answer)["upcomingInvoice"].is_null());

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_finalizations_stay_gapless() {
    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (org, admin) = api.org("Acme", Some("2026-03-01T00:00:00Z")).await;
        let customer = create_customer(&admin, "cust").await;
        let mut drafts = Vec::new();
        for _ in 0..8 {
            drafts.push(insert_draft(api.db(), &org, &customer, None, &[("Base", "1", 500)]).await);
        }
        let tasks: Vec<_> = drafts
            .iter()
            .map(|id| {
                let client = admin.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    client
                        .graphql(
                            "mutation($id: ID!) { finalizeInvoice(id: $id) { number } }",
                            json!({"id": id}),
                        )
                        .await
                })
            })
            .collect();
        let mut numbers = Vec::new();
        for task in tasks {
            let answer = task.await.expect("task");
            numbers.push(
                ok(&answer)["finalizeInvoice"]["number"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        numbers.sort();
        let expected: Vec<String> = (1..=8).map(|n| format!("INV-2026-{n:06}")).collect();
        assert_eq!(numbers, expected, "{:?}", env.backend);
        let answer = admin
            .graphql("{ verifyAuditChain { valid } }", json!({}))
            .await;
        assert_eq!(ok(&answer)["verifyAuditChain"]["valid"], true);
        api.stop().await;
        env.cleanup().await;
    }
}
