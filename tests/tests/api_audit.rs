//! The audit trail end to end: every mutation appends to a per-organization
//! hash chain that `verifyAuditChain` re-checks; tampering with a stored row
//! (past the append-only triggers) is detected and located.

mod api_support;

use api_support::{Api, code, create_customer, create_meter, ok};
use sea_orm::ConnectionTrait;
use serde_json::json;
use tests::{Backend, TestEnv};

const VERIFY: &str = "{ verifyAuditChain { valid checked firstBrokenId } }";

#[tokio::test]
async fn chain_is_valid_until_tampered_with() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", None).await;
        let (_, other) = api.org("Other", None).await;
        let customer = create_customer(&admin, "cust").await;
        create_meter(&admin, "calls", "SUM").await;
        ok(&admin
            .graphql(
                "mutation { createApiKey(role: READ_ONLY) { id } }",
                json!({}),
            )
            .await);
        create_customer(&other, "x").await;

        let answer = admin
            .graphql(
                "{ auditEvents { totalCount nodes { id seq actor action entityType entityId hash prevHash at } } }",
                json!({}),
            )
            .await;
        let events = ok(&answer)["auditEvents"]["nodes"]
            .as_array()
            .unwrap()
            .clone();
        let actions: Vec<&str> = events
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            vec![
                "organization.created",
                "api_key.created",
                "customer.created",
                "meter.created",
                "api_key.created"
            ]
        );
        assert_eq!(events[0]["actor"], "bootstrap");
        assert!(events[2]["actor"].as_str().unwrap().starts_with("key:"));
        assert_eq!(events[0]["prevHash"], "0".repeat(64));
        for pair in events.windows(2) {
            assert_eq!(pair[1]["prevHash"], pair[0]["hash"], "chained");
            assert_eq!(
                pair[1]["seq"].as_i64().unwrap(),
                pair[0]["seq"].as_i64().unwrap() + 1
            );
        }
        let answer = admin
            .graphql(
                "query($e: ID!) { auditEvents(entityId: $e) { nodes { action entityType } } }",
                json!({"e": customer}),
            )
            .await;
        assert_eq!(
            ok(&answer)["auditEvents"]["nodes"],
            json!([{"action": "customer.created", "entityType": "customer"}])
        );
        // Pagination.
        let answer = admin
            .graphql(
                "{ auditEvents(first: 2) { pageInfo { hasNextPage endCursor } nodes { seq } } }",
                json!({}),
            )
            .await;
        let page = &ok(&answer)["auditEvents"];
        assert_eq!(page["pageInfo"]["hasNextPage"], true);
        let answer = admin
            .graphql(
                "query($a: String) { auditEvents(first: 10, after: $a) { nodes { seq } } }",
                json!({"a": page["pageInfo"]["endCursor"]}),
            )
            .await;
        assert_eq!(
            ok(&answer)["auditEvents"]["nodes"],
            json!([{"seq": 3}, {"seq": 4}, {"seq": 5}])
        );

        let answer = admin.graphql(VERIFY, json!({})).await;
        assert_eq!(
            ok(&answer)["verifyAuditChain"],
            json!({"valid": true, "checked": 5, "firstBrokenId": null})
        );

        // The database refuses an UPDATE…
        let target = events[2]["id"].as_str().unwrap().to_string();
        let update = format!("UPDATE audit_events SET actor = 'mallory' WHERE id = {target}");
        assert!(
            api.db().execute_unprepared(&update).await.is_err(),
            "append-only"
        );
        // …so the attacker goes around the trigger.
        match env.backend {
            Backend::Sqlite => {
                api.db()
                    .execute_unprepared("DROP TRIGGER audit_events_no_update")
                    .await
                    .unwrap();
            }
            Backend::Postgres => {
                api.db()
                    .execute_unprepared("ALTER TABLE audit_events DISABLE TRIGGER ALL")
                    .await
                    .unwrap();
            }
        }
        api.db().execute_unprepared(&update).await.unwrap();
        let answer = admin.graphql(VERIFY, json!({})).await;
        assert_eq!(
            ok(&answer)["verifyAuditChain"],
            json!({"valid": false, "checked": 3, "firstBrokenId": target})
        );
        // Other organizations' chains are untouched.
        let answer = other.graphql(VERIFY, json!({})).await;
        assert_eq!(ok(&answer)["verifyAuditChain"]["valid"], true);

        let answer = admin
            .graphql("{ auditEvents(first: 500) { totalCount } }", json!({}))
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_mutations_keep_one_chain() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", None).await;
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let client = admin.clone();
                tokio::spawn(async move {
                    client
                        .graphql(
                            "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
                            json!({"input": {"externalId": format!("c{i}"), "name": "C"}}),
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            let answer = task.await.expect("task");
            ok(&answer);
        }
        let answer = admin.graphql(VERIFY, json!({})).await;
        assert_eq!(
            ok(&answer)["verifyAuditChain"],
            json!({"valid": true, "checked": 14, "firstBrokenId": null}),
            "{:?}",
            env.backend
        );
        api.stop().await;
        env.cleanup().await;
    }
}

/// What is stored is what was hashed, on both backends (PostgreSQL inserts
/// a batch of events as one JSON document): text that needs escaping,
/// non-ASCII, nested values, absent and JSON-null snapshots, microseconds.
#[tokio::test]
async fn appended_events_read_back_as_hashed() {
    use entity::audit_event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};
    use workflows::audit::{self, AuditEntry};

    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (org, _) = api.org("Acme", None).await;
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:20:30.123456Z")
            .unwrap()
            .to_utc();
        let nested = json!({"name": "Ünïcode \"quoted\" \\ back\nline ✓", "amount": "12.345",
                            "lines": [{"qty": 3, "ok": true, "none": null}], "big": 9007199254740993_i64});
        let entries = vec![
            AuditEntry {
                action: "test.created",
                entity_type: "thing",
                entity_id: "a",
                before: None,
                after: Some(nested.clone()),
            },
            AuditEntry {
                action: "test.changed",
                entity_type: "thing",
                entity_id: "a",
                before: Some(nested.clone()),
                after: Some(json!({})),
            },
            AuditEntry {
                action: "test.nulled",
                entity_type: "thing",
                entity_id: "é",
                before: Some(serde_json::Value::Null),
                after: None,
            },
        ];
        let txn = api.db().begin().await.unwrap();
        audit::append_all(&txn, &org, "job:test \"actor\"", entries, at)
            .await
            .unwrap();
        txn.commit().await.unwrap();

        let stored = audit_event::Entity::find()
            .filter(audit_event::Column::OrganizationId.eq(org.as_str()))
            .filter(audit_event::Column::Action.starts_with("test."))
            .order_by_asc(audit_event::Column::Seq)
            .all(api.db())
            .await
            .unwrap();
        let seen: Vec<_> = stored
            .iter()
            .map(|e| {
                // A JSON null and no snapshot hash alike; backends may store either.
                let present = |v: &Option<serde_json::Value>| v.clone().filter(|v| !v.is_null());
                (
                    e.action.as_str(),
                    e.entity_id.as_str(),
                    e.actor.as_str(),
                    e.at,
                    present(&e.before),
                    present(&e.after),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    "test.created",
                    "a",
                    "job:test \"actor\"",
                    at,
                    None,
                    Some(nested.clone())
                ),
                (
                    "test.changed",
                    "a",
                    "job:test \"actor\"",
                    at,
                    Some(nested),
                    Some(json!({}))
                ),
                ("test.nulled", "é", "job:test \"actor\"", at, None, None),
            ],
            "{:?}",
            env.backend
        );
        let check = audit::verify(api.db(), &org).await.unwrap();
        assert!(check.valid, "{:?}: {check:?}", env.backend);
        assert!(check.checked >= 4, "{:?}: {check:?}", env.backend);
        api.stop().await;
        env.cleanup().await;
    }
}
