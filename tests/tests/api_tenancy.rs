//! Bootstrap, API keys, roles and tenant isolation, end to end over HTTP on
//! every backend.

mod api_support;

use api_support::{
    Api, code, create_customer, create_plan, create_subscription, flat, insert_draft, ok, snapshot,
};
use serde_json::json;
use tests::TestEnv;

const CREATE_ORG: &str = "mutation($input: CreateOrganizationInput!) {
    createOrganization(input: $input) { organization { id testClock { frozenTime status } } apiKey } }";

#[tokio::test]
async fn bootstrap_validates_and_needs_the_admin_token() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let input = json!({"input": {"name": "Acme", "currency": "USD"}});

        let answer = api.anon.graphql(CREATE_ORG, input.clone()).await;
        assert_eq!(code(&answer), "UNAUTHENTICATED", "{answer}");
        let answer = api
            .anon
            .with_key("wrong")
            .graphql(CREATE_ORG, input.clone())
            .await;
        assert_eq!(code(&answer), "UNAUTHENTICATED", "{answer}");

        let root = api.anon.with_key(&api.admin_token);
        let before = snapshot(api.db()).await;
        for bad in [
            json!({"name": "A", "currency": "XYZ"}),
            json!({"name": "A", "currency": "USD", "timezone": "Mars/Olympus"}),
            json!({"name": "A", "currency": "USD", "netTermsDays": -1}),
            json!({"name": "A", "currency": "USD", "gracePeriodHours": -1}),
            json!({"name": "A", "currency": "USD", "lateUsageWindowDays": -5}),
            json!({"name": "A", "currency": "USD", "testClockStart": "yesterday"}),
        ] {
            let answer = root.graphql(CREATE_ORG, json!({"input": bad})).await;
            assert_eq!(code(&answer), "BAD_USER_INPUT", "{bad}: {answer}");
        }
        assert_eq!(snapshot(api.db()).await, before, "bad input writes nothing");

        let answer = root
            .graphql(
                CREATE_ORG,
                json!({"input": {"name": "Acme", "currency": "JPY", "timezone": "Asia/Tokyo",
                                 "testClockStart": "2026-01-16T00:00:00Z"}}),
            )
            .await;
        let payload = &ok(&answer)["createOrganization"];
        assert_eq!(
            payload["organization"]["testClock"]["frozenTime"],
            "2026-01-16T00:00:00Z"
        );
        assert_eq!(payload["organization"]["testClock"]["status"], "READY");
        let key = payload["apiKey"].as_str().unwrap();
        assert_eq!(key.len(), 64, "a 256-bit hex secret");

        let org = api
            .anon
            .with_key(key)
            .graphql("{ organization { name currency timezone netTermsDays gracePeriodHours lateUsageWindowDays now } }", json!({}))
            .await;
        let org = &ok(&org)["organization"];
        assert_eq!(org["currency"], "JPY");
        assert_eq!(org["timezone"], "Asia/Tokyo");
        assert_eq!(org["netTermsDays"], 30);
        assert_eq!(org["gracePeriodHours"], 0);
        assert_eq!(org["lateUsageWindowDays"], 35);
        assert_eq!(org["now"], "2026-01-16T00:00:00Z");

        // The key is stored only as its hash.
        let stored = api_support::count(api.db(), "api_keys").await;
        assert_eq!(stored, 1);
        let plain = sea_orm::ConnectionTrait::query_one_raw(
            api.db(),
            sea_orm::Statement::from_string(
                sea_orm::ConnectionTrait::get_database_backend(api.db()),
                format!("SELECT COUNT(*) AS n FROM api_keys WHERE key_hash = '{key}'"),
            ),
        )
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
        assert_eq!(plain, 0, "the secret itself is never stored");

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn roles_allow_and_forbid() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", None).await;
        let mut keys = std::collections::HashMap::new();
        for role in ["OPERATOR", "INGEST", "READ_ONLY"] {
            let answer = admin
                .graphql(
                    "mutation($role: ApiKeyRole!) { createApiKey(role: $role) { id apiKey role } }",
                    json!({"role": role}),
                )
                .await;
            let payload = &ok(&answer)["createApiKey"];
            assert_eq!(payload["role"], role);
            keys.insert(
                role,
                (
                    payload["id"].as_str().unwrap().to_string(),
                    api.anon.with_key(payload["apiKey"].as_str().unwrap()),
                ),
            );
        }
        let create_customer_q =
            "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }";
        let customers_q = "{ customers { totalCount } }";
        let ingest_q = "mutation { ingestUsage(events: []) { accepted } }";
        let finalize_q = "mutation { finalizeInvoice(id: \"nope\") { id } }";
        let new_key_q = "mutation { createApiKey(role: READ_ONLY) { id } }";
        let org_q = "{ organization { id } }";

        // (role, operation, expected code or None for success)
        let cases: Vec<(&str, &str, serde_json::Value, Option<&str>)> = vec![
            (
                "ADMIN",
                create_customer_q,
                json!({"input": {"externalId": "c1", "name": "C"}}),
                None,
            ),
            ("ADMIN", ingest_q, json!({}), None),
            ("OPERATOR", customers_q, json!({}), None),
            ("OPERATOR", finalize_q, json!({}), Some("NOT_FOUND")),
            (
                "OPERATOR",
                create_customer_q,
                json!({"input": {"externalId": "c2", "name": "C"}}),
                Some("FORBIDDEN"),
            ),
            ("OPERATOR", new_key_q, json!({}), Some("FORBIDDEN")),
            ("OPERATOR", ingest_q, json!({}), Some("FORBIDDEN")),
            ("INGEST", ingest_q, json!({}), None),
            ("INGEST", org_q, json!({}), None),
            ("INGEST", customers_q, json!({}), Some("FORBIDDEN")),
            (
                "INGEST",
                create_customer_q,
                json!({"input": {"externalId": "c3", "name": "C"}}),
                Some("FORBIDDEN"),
            ),
            ("READ_ONLY", customers_q, json!({}), None),
            ("READ_ONLY", org_q, json!({}), None),
            (
                "READ_ONLY",
                create_customer_q,
                json!({"input": {"externalId": "c4", "name": "C"}}),
                Some("FORBIDDEN"),
            ),
            ("READ_ONLY", finalize_q, json!({}), Some("FORBIDDEN")),
            ("READ_ONLY", ingest_q, json!({}), Some("FORBIDDEN")),
        ];
        for (role, query, vars, expected) in cases {
            let client = if role == "ADMIN" {
                &admin
            } else {
                &keys[role].1
            };
            let answer = client.graphql(query, vars).await;
            match expected {
                None => {
                    ok(&answer);
                }
                Some(expected) => assert_eq!(code(&answer), expected, "{role} {query}: {answer}"),
            }
        }
        let answer = admin.graphql(customers_q, json!({})).await;
        assert_eq!(
            ok(&answer)["customers"]["totalCount"],
            1,
            "only the ADMIN's customer landed"
        );

        // Anonymous, garbage and revoked keys.
        assert_eq!(
            code(&api.anon.graphql(customers_q, json!({})).await),
            "UNAUTHENTICATED"
        );
        assert_eq!(
            code(
                &api.anon
                    .with_key("garbage")
                    .graphql(customers_q, json!({}))
                    .await
            ),
            "UNAUTHENTICATED"
        );
        let (ro_id, ro) = &keys["READ_ONLY"];
        let answer = admin
            .graphql(
                "mutation($id: ID!) { revokeApiKey(id: $id) }",
                json!({"id": ro_id}),
            )
            .await;
        assert_eq!(ok(&answer)["revokeApiKey"], true);
        assert_eq!(
            code(&ro.graphql(customers_q, json!({})).await),
            "UNAUTHENTICATED"
        );

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn another_tenants_ids_do_not_exist() {
    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (org_a, a) = api.org("A", None).await;
        let (_, b) = api.org("B", None).await;
        let customer = create_customer(&a, "cust-a").await;
        let plan = create_plan(&a, "basic", flat("10.00")).await;
        let sub = create_subscription(&a, &customer, &plan).await;
        let invoice = insert_draft(
            api.db(),
            &org_a,
            &customer,
            Some(&sub),
            &[("Base", "1", 1000)],
        )
        .await;
        let key_a = ok(&a
            .graphql(
                "mutation { createApiKey(role: READ_ONLY) { id } }",
                json!({}),
            )
            .await)["createApiKey"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let before = snapshot(api.db()).await;

        // Reads: null, as if nonexistent.
        let answer = b
            .graphql(
                "query($c: ID!, $p: ID!, $s: ID!, $i: ID!) {
                    customer(id: $c) { id } plan(id: $p) { id } subscription(id: $s) { id }
                    invoice(id: $i) { id }
                    customers { totalCount } subscriptions { totalCount } invoices { totalCount } }",
                json!({"c": customer, "p": plan, "s": sub, "i": invoice}),
            )
            .await;
        let data = ok(&answer);
        for field in ["customer", "plan", "subscription", "invoice"] {
            assert!(data[field].is_null(), "{field}: {answer}");
        }
        for list in ["customers", "subscriptions", "invoices"] {
            assert_eq!(data[list]["totalCount"], 0, "{list}");
        }
        let answer = b
            .graphql(
                "query($s: ID!) { upcomingInvoice(subscriptionId: $s) { id } }",
                json!({"s": sub}),
            )
            .await;
        assert_eq!(code(&answer), "NOT_FOUND", "{answer}");

        // Writes: NOT_FOUND, nothing changes.
        let attempts = [
            (
                "mutation($c: ID!, $p: ID!) { createSubscription(input: {customerId: $c, planId: $p}) { id } }",
                json!({"c": customer, "p": plan}),
            ),
            (
                "mutation($s: ID!, $p: ID!) { changeSubscriptionPlan(input: {subscriptionId: $s, planId: $p, quantity: 3}) { id } }",
                json!({"s": sub, "p": plan}),
            ),
            (
                "mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s, atPeriodEnd: false}) { id } }",
                json!({"s": sub}),
            ),
            (
                "mutation($i: ID!) { finalizeInvoice(id: $i) { id } }",
                json!({"i": invoice}),
            ),
            (
                "mutation($i: ID!) { voidInvoice(id: $i) { id } }",
                json!({"i": invoice}),
            ),
            (
                "mutation($i: ID!) { markInvoicePaid(id: $i) { id } }",
                json!({"i": invoice}),
            ),
            (
                "mutation($k: ID!) { revokeApiKey(id: $k) }",
                json!({"k": key_a}),
            ),
            (
                "mutation($p: ID!) { createPlanVersion(planId: $p, effectiveFrom: \"2099-01-01T00:00:00Z\", prices: [{model: FLAT, unitAmount: \"1\"}]) { id } }",
                json!({"p": plan}),
            ),
        ];
        for (query, vars) in attempts {
            let answer = b.graphql(query, vars).await;
            assert_eq!(code(&answer), "NOT_FOUND", "{query}: {answer}");
        }
        assert_eq!(snapshot(api.db()).await, before, "org B changed nothing");

        // Org A still sees its own rows.
        let answer = a
            .graphql(
                "query($c: ID!) { customer(id: $c) { externalId subscriptions { id } } }",
                json!({"c": customer}),
            )
            .await;
        assert_eq!(
            ok(&answer)["customer"]["subscriptions"][0]["id"],
            sub.as_str()
        );

        api.stop().await;
        env.cleanup().await;
    }
}
