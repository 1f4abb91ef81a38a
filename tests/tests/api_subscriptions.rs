//! Subscriptions end to end: create with and without trial, idempotent
//! replay, plan/quantity changes, cancellation — each with its history row
//! and outbox job (the workers are not running here).

mod api_support;

use api_support::{
    Api, code, create_customer, create_plan, create_plan_with, flat, ok, snapshot, strings,
};
use serde_json::{Value, json};
use tests::TestEnv;

const CREATE: &str =
    "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) {
    id status quantity billingAnchor startedAt trialEnd currentPeriodStart currentPeriodEnd
    cancelAtPeriodEnd canceledAt plan { code } customer { externalId } invoices { id } } }";
const CHANGE: &str =
    "mutation($input: ChangeSubscriptionPlanInput!) { changeSubscriptionPlan(input: $input) {
    id status quantity plan { code } } }";
const CANCEL: &str =
    "mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) {
    id status cancelAtPeriodEnd canceledAt } }";

async fn outbox(api: &Api, sub: &str) -> Vec<String> {
    strings(
        api.db(),
        &format!("SELECT job_key FROM outbox WHERE subject_id = '{sub}' ORDER BY id"),
        "job_key",
    )
    .await
}

async fn changes(api: &Api, sub: &str) -> Vec<String> {
    strings(
        api.db(),
        &format!("SELECT kind FROM subscription_changes WHERE subscription_id = '{sub}' ORDER BY created_at, id"),
        "kind",
    )
    .await
}

fn sub(answer: &Value, field: &str) -> Value {
    ok(answer)[field].clone()
}

#[tokio::test]
async fn create_with_and_without_trial_and_replay() {
    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (_, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        let customer = create_customer(&admin, "cust").await;
        let basic = create_plan(&admin, "basic", flat("100.00")).await;
        let trial = create_plan_with(&admin, "trial", 14, flat("100.00")).await;

        // No trial: ACTIVE, period 0 open, subscription_start job.
        let answer = admin
            .graphql(
                CREATE,
                json!({"input": {"customerId": customer, "planId": basic}}),
            )
            .await;
        let s = sub(&answer, "createSubscription");
        assert_eq!(s["status"], "ACTIVE");
        assert_eq!(s["quantity"], 1);
        assert_eq!(s["billingAnchor"], "ANNIVERSARY");
        assert_eq!(s["startedAt"], "2026-01-16T00:00:00Z");
        assert!(s["trialEnd"].is_null());
        assert_eq!(s["currentPeriodStart"], "2026-01-16T00:00:00Z");
        assert_eq!(s["currentPeriodEnd"], "2026-02-16T00:00:00Z");
        assert_eq!(s["plan"]["code"], "basic");
        assert_eq!(s["customer"]["externalId"], "cust");
        assert_eq!(
            s["invoices"],
            json!([]),
            "the worker invoices it, not the API"
        );
        let id = s["id"].as_str().unwrap().to_string();
        assert_eq!(
            outbox(&api, &id).await,
            vec![format!("subscription_start:{id}:2026-01-16T00:00:00Z")]
        );
        assert_eq!(changes(&api, &id).await, vec!["CREATED"]);
        assert_eq!(api_support::count(api.db(), "invoices").await, 0);

        // Trial from the plan: TRIALING, no period yet, trial_expiry job.
        let answer = admin
            .graphql(
                CREATE,
                json!({"input": {"customerId": customer, "planId": trial}}),
            )
            .await;
        let s = sub(&answer, "createSubscription");
        assert_eq!(s["status"], "TRIALING");
        assert_eq!(s["trialEnd"], "2026-01-30T00:00:00Z");
        assert!(s["currentPeriodStart"].is_null());
        assert!(s["currentPeriodEnd"].is_null());
        let id = s["id"].as_str().unwrap().to_string();
        assert_eq!(
            outbox(&api, &id).await,
            vec![format!("trial_expiry:{id}:2026-01-30T00:00:00Z")]
        );

        // trialDays overrides the plan; CALENDAR anchors on the 1st.
        let answer = admin
            .graphql(
                CREATE,
                json!({"input": {"customerId": customer, "planId": trial, "trialDays": 0,
                                 "billingAnchor": "CALENDAR", "quantity": 3}}),
            )
            .await;
        let s = sub(&answer, "createSubscription");
        assert_eq!(s["status"], "ACTIVE");
        assert_eq!(s["quantity"], 3);
        assert_eq!(s["currentPeriodStart"], "2026-01-16T00:00:00Z");
        assert_eq!(s["currentPeriodEnd"], "2026-02-01T00:00:00Z");

        // Idempotent replay: same answer, nothing written.
        let input =
            json!({"input": {"customerId": customer, "planId": basic, "idempotencyKey": "k1"}});
        let first = sub(
            &admin.graphql(CREATE, input.clone()).await,
            "createSubscription",
        );
        let before = snapshot(api.db()).await;
        let again = sub(&admin.graphql(CREATE, input).await, "createSubscription");
        assert_eq!(first["id"], again["id"]);
        assert_eq!(snapshot(api.db()).await, before, "a replay writes nothing");
        let answer = admin
            .graphql(
                CREATE,
                json!({"input": {"customerId": customer, "planId": basic, "quantity": 2, "idempotencyKey": "k1"}}),
            )
            .await;
        assert_eq!(code(&answer), "CONFLICT", "{answer}");

        // Bad input writes nothing.
        for bad in [
            json!({"customerId": customer, "planId": basic, "quantity": 0}),
            json!({"customerId": customer, "planId": basic, "trialDays": -1}),
            json!({"customerId": customer, "planId": basic, "billingAnchor": "WEEKLY"}),
            json!({"customerId": customer, "planId": basic, "startAt": "soon"}),
        ] {
            let answer = admin.graphql(CREATE, json!({"input": bad})).await;
            assert_eq!(code(&answer), "BAD_USER_INPUT", "{bad}: {answer}");
        }
        let answer = admin
            .graphql(
                CREATE,
                json!({"input": {"customerId": "nope", "planId": basic}}),
            )
            .await;
        assert_eq!(code(&answer), "NOT_FOUND");
        assert_eq!(snapshot(api.db()).await, before);

        let answer = admin
            .graphql(
                "{ subscriptions(status: TRIALING) { totalCount nodes { plan { code } } } }",
                json!({}),
            )
            .await;
        assert_eq!(ok(&answer)["subscriptions"]["totalCount"], 1);

        // Lists with related rows (batch-loaded per page).
        create_customer(&admin, "lonely").await;
        let answer = admin
            .graphql(
                "{ subscriptions(first: 10) { nodes { status customer { externalId } plan { code version } } }
                   customers { nodes { externalId subscriptions { plan { code } } } } }",
                json!({}),
            )
            .await;
        let data = ok(&answer);
        let subs = data["subscriptions"]["nodes"].as_array().unwrap();
        assert_eq!(subs.len(), 4);
        assert!(subs.iter().all(|s| s["customer"]["externalId"] == "cust"));
        let plans: Vec<&str> = subs
            .iter()
            .map(|s| s["plan"]["code"].as_str().unwrap())
            .collect();
        assert_eq!(plans, vec!["basic", "trial", "trial", "basic"]);
        assert_eq!(
            data["customers"]["nodes"],
            json!([
                {"externalId": "cust", "subscriptions": [
                    {"plan": {"code": "basic"}}, {"plan": {"code": "trial"}},
                    {"plan": {"code": "trial"}}, {"plan": {"code": "basic"}}]},
                {"externalId": "lonely", "subscriptions": []}
            ])
        );

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn change_and_cancel() {
    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (_, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        let customer = create_customer(&admin, "cust").await;
        let basic = create_plan(&admin, "basic", flat("100.00")).await;
        let pro = create_plan(&admin, "pro", flat("150.00")).await;
        let id = api_support::create_subscription(&admin, &customer, &basic).await;

        // IMMEDIATELY: applied now, proration job recorded.
        let answer = admin
            .graphql(
                CHANGE,
                json!({"input": {"subscriptionId": id, "planId": pro}}),
            )
            .await;
        let s = sub(&answer, "changeSubscriptionPlan");
        assert_eq!(s["plan"]["code"], "pro");
        assert_eq!(changes(&api, &id).await, vec!["CREATED", "PLAN_CHANGE"]);
        let change_id = strings(
            api.db(),
            &format!("SELECT id FROM subscription_changes WHERE subscription_id = '{id}' AND kind = 'PLAN_CHANGE'"),
            "id",
        )
        .await
        .remove(0);
        assert_eq!(
            outbox(&api, &id).await,
            vec![
                format!("subscription_start:{id}:2026-01-16T00:00:00Z"),
                format!("proration:{id}:{change_id}"),
            ]
        );

        // Quantity change without proration: no job.
        let answer = admin
            .graphql(
                CHANGE,
                json!({"input": {"subscriptionId": id, "planId": pro, "quantity": 3, "prorationBehavior": "NONE"}}),
            )
            .await;
        assert_eq!(sub(&answer, "changeSubscriptionPlan")["quantity"], 3);
        assert_eq!(changes(&api, &id).await.last().unwrap(), "QUANTITY_CHANGE");
        assert_eq!(outbox(&api, &id).await.len(), 2);

        // Nothing to change.
        let answer = admin
            .graphql(
                CHANGE,
                json!({"input": {"subscriptionId": id, "planId": pro, "quantity": 3}}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");

        // PERIOD_END: recorded for the period end, subscription unchanged.
        let answer = admin
            .graphql(
                CHANGE,
                json!({"input": {"subscriptionId": id, "planId": basic, "timing": "PERIOD_END"}}),
            )
            .await;
        let s = sub(&answer, "changeSubscriptionPlan");
        assert_eq!(s["plan"]["code"], "pro");
        assert_eq!(s["quantity"], 3);
        let pending = strings(
            api.db(),
            &format!("SELECT plan_id FROM subscription_changes WHERE subscription_id = '{id}' AND applied_at IS NULL"),
            "plan_id",
        )
        .await;
        assert_eq!(pending, vec![basic.clone()]);
        assert_eq!(
            outbox(&api, &id).await.len(),
            2,
            "no job for a period-end change"
        );

        // Cancel at period end: a flag.
        let answer = admin
            .graphql(
                CANCEL,
                json!({"input": {"subscriptionId": id, "atPeriodEnd": true}}),
            )
            .await;
        let s = sub(&answer, "cancelSubscription");
        assert_eq!(s["status"], "ACTIVE");
        assert_eq!(s["cancelAtPeriodEnd"], true);

        // Cancel now: CANCELED, final-invoice job.
        let answer = admin
            .graphql(
                CANCEL,
                json!({"input": {"subscriptionId": id, "atPeriodEnd": false, "idempotencyKey": "c1"}}),
            )
            .await;
        let s = sub(&answer, "cancelSubscription");
        assert_eq!(s["status"], "CANCELED");
        assert_eq!(s["canceledAt"], "2026-01-16T00:00:00Z");
        assert_eq!(changes(&api, &id).await.last().unwrap(), "CANCEL");
        let jobs = outbox(&api, &id).await;
        assert_eq!(jobs.len(), 3);
        assert!(jobs[2].starts_with(&format!("proration:{id}:")));
        // A replay of the same cancel answers the same; anything else is refused.
        let before = snapshot(api.db()).await;
        let answer = admin
            .graphql(
                CANCEL,
                json!({"input": {"subscriptionId": id, "atPeriodEnd": false, "idempotencyKey": "c1"}}),
            )
            .await;
        assert_eq!(sub(&answer, "cancelSubscription")["status"], "CANCELED");
        let answer = admin
            .graphql(
                CANCEL,
                json!({"input": {"subscriptionId": id, "atPeriodEnd": false}}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "CANCELED is final");
        assert!(api_support::message(&answer).contains("CANCELED"));
        let answer = admin
            .graphql(
                CHANGE,
                json!({"input": {"subscriptionId": id, "planId": basic}}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");
        assert_eq!(snapshot(api.db()).await, before);

        api.stop().await;
        env.cleanup().await;
    }
}
