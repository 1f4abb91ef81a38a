//! Catalog and customers end to end: creation, reads, pagination, versions,
//! and bad input that is refused with a code and writes nothing.

mod api_support;

use api_support::{Api, code, create_customer, create_meter, message, ok, snapshot};
use serde_json::json;
use tests::TestEnv;

const CREATE_PLAN: &str = "mutation($input: CreatePlanInput!) { createPlan(input: $input) {
    id code version interval intervalCount trialDays
    prices { id model timing unitAmount packageSize description meter { code }
             tiers { upTo unitAmount flatAmount } } } }";

#[tokio::test]
async fn meters_plans_and_versions() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        create_meter(&admin, "api_calls", "SUM").await;
        let answer = admin
            .graphql(
                "mutation { createMeter(input: {code: \"api_calls\", name: \"x\", aggregation: COUNT}) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "CONFLICT", "{answer}");
        let answer = admin
            .graphql(
                "mutation { createMeter(input: {code: \"users\", name: \"x\", aggregation: UNIQUE_COUNT}) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        let answer = admin
            .graphql(
                "mutation { createMeter(input: {code: \"users\", name: \"Users\", aggregation: UNIQUE_COUNT, uniqueProperty: \"user_id\"}) { code aggregation uniqueProperty } }",
                json!({}),
            )
            .await;
        assert_eq!(ok(&answer)["createMeter"]["uniqueProperty"], "user_id");

        let answer = admin
            .graphql(
                CREATE_PLAN,
                json!({"input": {"code": "pro", "name": "Pro", "interval": "MONTH", "prices": [
                    {"model": "FLAT", "unitAmount": "100.00", "description": "Seat"},
                    {"model": "PER_UNIT", "meterCode": "api_calls", "unitAmount": "0.0004"},
                    {"model": "GRADUATED", "meterCode": "api_calls", "timing": "IN_ARREARS", "tiers": [
                        {"upTo": "100", "unitAmount": "1.5"},
                        {"upTo": null, "unitAmount": "0.000000000001", "flatAmount": "2"}]}
                ]}}),
            )
            .await;
        let plan = &ok(&answer)["createPlan"];
        assert_eq!(plan["version"], 1);
        assert_eq!(plan["intervalCount"], 1);
        assert_eq!(plan["trialDays"], 0);
        let prices = plan["prices"].as_array().unwrap();
        assert_eq!(prices[0]["model"], "FLAT");
        assert_eq!(prices[0]["timing"], "IN_ADVANCE");
        assert_eq!(prices[0]["unitAmount"], "100");
        assert!(prices[0]["tiers"].is_null());
        assert_eq!(prices[1]["unitAmount"], "0.0004", "exact, a string");
        assert_eq!(
            prices[1]["timing"], "IN_ARREARS",
            "metered prices bill in arrears"
        );
        assert_eq!(prices[1]["meter"]["code"], "api_calls");
        assert_eq!(
            prices[2]["tiers"],
            json!([{"upTo": "100", "unitAmount": "1.5", "flatAmount": "0"},
                   {"upTo": null, "unitAmount": "0.000000000001", "flatAmount": "2"}])
        );
        let plan_id = plan["id"].as_str().unwrap().to_string();

        // A new version takes effect at its instant, not before.
        let answer = admin
            .graphql(
                "mutation($p: ID!) { createPlanVersion(planId: $p, effectiveFrom: \"2026-02-01T00:00:00Z\",
                    prices: [{model: FLAT, unitAmount: \"120.00\"}]) { version prices { unitAmount } } }",
                json!({"p": plan_id}),
            )
            .await;
        assert_eq!(
            ok(&answer)["createPlanVersion"]["version"],
            1,
            "still version 1 now"
        );
        let answer = admin
            .graphql(
                "mutation($p: ID!) { createPlanVersion(planId: $p, effectiveFrom: \"2026-01-01T00:00:00Z\",
                    prices: [{model: FLAT, unitAmount: \"1\"}]) { version } }",
                json!({"p": plan_id}),
            )
            .await;
        assert_eq!(
            code(&answer),
            "BAD_USER_INPUT",
            "a version cannot start in the past"
        );
        let answer = admin
            .graphql(
                "mutation { advanceTestClock(to: \"2026-02-01T00:00:00Z\") { frozenTime status } }",
                json!({}),
            )
            .await;
        assert_eq!(
            ok(&answer)["advanceTestClock"]["frozenTime"],
            "2026-02-01T00:00:00Z"
        );
        assert_eq!(ok(&answer)["advanceTestClock"]["status"], "ADVANCING");
        let answer = admin
            .graphql(
                "query($p: ID!) { plan(id: $p) { version prices { unitAmount } } plans { code } }",
                json!({"p": plan_id}),
            )
            .await;
        let data = ok(&answer);
        assert_eq!(data["plan"]["version"], 2);
        assert_eq!(data["plan"]["prices"], json!([{"unitAmount": "120"}]));
        assert_eq!(data["plans"], json!([{"code": "pro"}]));
        let answer = admin
            .graphql(
                "mutation { advanceTestClock(to: \"2026-01-20T00:00:00Z\") { status } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "clocks do not go back");

        let answer = admin.graphql("{ meters { code } }", json!({})).await;
        assert_eq!(
            ok(&answer)["meters"],
            json!([{"code": "api_calls"}, {"code": "users"}])
        );

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn bad_catalog_input_is_refused_and_writes_nothing() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", None).await;
        create_meter(&admin, "api_calls", "SUM").await;
        let plan = |prices: serde_json::Value| json!({"input": {"code": "p", "name": "P", "interval": "MONTH", "prices": prices}});
        let before = snapshot(api.db()).await;
        let cases = vec![
            (
                plan(json!([{"model": "FLAT", "unitAmount": "1e5"}])),
                "not a decimal",
            ),
            (
                plan(json!([{"model": "FLAT", "unitAmount": "NaN"}])),
                "not a decimal",
            ),
            (
                plan(json!([{"model": "FLAT", "unitAmount": "Infinity"}])),
                "not a decimal",
            ),
            (
                plan(json!([{"model": "FLAT", "unitAmount": "abc"}])),
                "not a decimal",
            ),
            (plan(json!([{"model": "FLAT", "unitAmount": 5}])), "Decimal"),
            (
                plan(json!([{"model": "FLAT", "unitAmount": "12345678901234567890123456789.5"}])),
                "28",
            ),
            (
                plan(json!([{"model": "FLAT", "unitAmount": "-1"}])),
                "must not be negative",
            ),
            (plan(json!([{"model": "FLAT"}])), "needs a unitAmount"),
            (
                plan(json!([{"model": "PER_UNIT", "meterCode": "nope", "unitAmount": "1"}])),
                "unknown meter code",
            ),
            (
                plan(json!([{"model": "PER_UNIT", "unitAmount": "1"}])),
                "needs a meterCode",
            ),
            (plan(json!([])), "at least one price"),
            (
                plan(
                    json!([{"model": "GRADUATED", "meterCode": "api_calls", "tiers": [
                    {"upTo": "100", "unitAmount": "1"},
                    {"upTo": "10", "unitAmount": "0.5"},
                    {"upTo": null, "unitAmount": "0.1"}]}]),
                ),
                "price prices[0]: tier 2: upTo 10 must be greater than the previous tier's upTo 100",
            ),
            (plan(json!([{"model": "BOGUS", "unitAmount": "1"}])), ""),
            (
                json!({"input": {"code": "p", "name": "P", "interval": "FORTNIGHT", "prices": [{"model": "FLAT", "unitAmount": "1"}]}}),
                "",
            ),
            (
                json!({"input": {"code": "p", "name": "P", "interval": "MONTH", "intervalCount": 0, "prices": [{"model": "FLAT", "unitAmount": "1"}]}}),
                "intervalCount",
            ),
        ];
        for (vars, expected) in cases {
            let answer = admin
                .graphql(
                    "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
                    vars.clone(),
                )
                .await;
            assert_eq!(code(&answer), "BAD_USER_INPUT", "{vars}: {answer}");
            assert!(message(&answer).contains(expected), "{vars}: {answer}");
        }
        // Unknown enum value as a literal in the document.
        let answer = admin
            .graphql("mutation { createMeter(input: {code: \"x\", name: \"x\", aggregation: AVERAGE}) { id } }", json!({}))
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        assert_eq!(snapshot(api.db()).await, before, "nothing written");

        // Duplicate plan code.
        let prices = json!([{"model": "FLAT", "unitAmount": "1"}]);
        ok(&admin
            .graphql(
                "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
                plan(prices.clone()),
            )
            .await);
        let answer = admin
            .graphql(
                "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
                plan(prices),
            )
            .await;
        assert_eq!(code(&answer), "CONFLICT", "{answer}");

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn customers_are_unique_and_paginated() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", None).await;
        let ids = [
            create_customer(&admin, "c1").await,
            create_customer(&admin, "c2").await,
            create_customer(&admin, "c3").await,
        ];
        let answer = admin
            .graphql(
                "mutation { createCustomer(input: {externalId: \"c1\", name: \"again\"}) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "CONFLICT", "{answer}");

        let page = "query($after: String) { customers(first: 2, after: $after) {
            nodes { id externalId email } pageInfo { hasNextPage endCursor } totalCount } }";
        let answer = admin.graphql(page, json!({})).await;
        let first = &ok(&answer)["customers"];
        assert_eq!(first["totalCount"], 3);
        assert_eq!(first["nodes"][0]["id"], ids[0].as_str());
        assert_eq!(first["nodes"][1]["id"], ids[1].as_str());
        assert_eq!(first["pageInfo"]["hasNextPage"], true);
        let cursor = first["pageInfo"]["endCursor"].clone();
        let answer = admin.graphql(page, json!({"after": cursor})).await;
        let second = &ok(&answer)["customers"];
        assert_eq!(second["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(second["nodes"][0]["externalId"], "c3");
        assert_eq!(second["pageInfo"]["hasNextPage"], false);

        // Query cost counts a page's selection once per node it may return.
        let wide: String = (0..60).map(|i| format!("f{i}: id ")).collect();
        let answer = admin
            .graphql(
                &format!("{{ customers(first: 100) {{ nodes {{ {wide} }} }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        let answer = admin
            .graphql(
                &format!("{{ customers(first: 10) {{ nodes {{ {wide} }} }} }}"),
                json!({}),
            )
            .await;
        ok(&answer);
        let answer = admin
            .graphql("{ customers(first: 101) { totalCount } }", json!({}))
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");
        let answer = admin
            .graphql(
                "{ customers(after: \"zz-not-a-cursor\") { totalCount } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");
        let answer = admin
            .graphql(
                "mutation { createCustomer(input: {externalId: \"\", name: \"x\"}) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");

        api.stop().await;
        env.cleanup().await;
    }
}
