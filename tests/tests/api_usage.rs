//! `ingestUsage` end to end: every outcome, duplicates inside a batch,
//! conflicts, the accept window's edges, and the batch limit.

mod api_support;

use api_support::{Api, code, create_customer, create_meter, ok, snapshot};
use serde_json::{Value, json};
use tests::TestEnv;

const INGEST: &str = "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) {
    accepted duplicates rejected results { index outcome code message } } }";

fn event(key: &str, customer: &str, meter: &str, value: &str, at: &str) -> Value {
    json!({"idempotencyKey": key, "customerExternalId": customer, "meterCode": meter,
           "value": value, "timestamp": at})
}

fn outcomes(answer: &Value) -> Vec<(String, Option<String>)> {
    ok(answer)["ingestUsage"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_string(),
                r["code"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn o(outcome: &str, code: Option<&str>) -> (String, Option<String>) {
    (outcome.to_string(), code.map(str::to_string))
}

#[tokio::test]
async fn every_outcome_and_the_window_edges() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        // now = 2026-01-16T00:00:00Z, lateUsageWindowDays = 35.
        let (_, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        create_customer(&admin, "cust").await;
        create_meter(&admin, "calls", "SUM").await;
        create_meter(&admin, "hits", "COUNT").await;
        let ingest_key = ok(&admin
            .graphql(
                "mutation { createApiKey(role: INGEST) { apiKey } }",
                json!({}),
            )
            .await)["createApiKey"]["apiKey"]
            .as_str()
            .unwrap()
            .to_string();
        let ingest = api.anon.with_key(&ingest_key);

        let mut with_props = event("k10", "cust", "calls", "1", "2026-01-15T00:00:00Z");
        with_props["properties"] = json!({"b": 1, "a": {"y": 2, "x": 1}});
        let batch = json!([
            event("k1", "cust", "calls", "5", "2026-01-15T12:00:00Z"),
            event("k1", "cust", "calls", "5.00", "2026-01-15T12:00:00Z"),
            event("k1", "cust", "calls", "6", "2026-01-15T12:00:00Z"),
            event("k2", "nobody", "calls", "1", "2026-01-15T00:00:00Z"),
            event("k3", "cust", "nothing", "1", "2026-01-15T00:00:00Z"),
            event("k4", "cust", "calls", "1", "2026-01-16T00:05:00Z"),
            event("k5", "cust", "calls", "1", "2026-01-16T00:05:01Z"),
            event("k6", "cust", "calls", "1", "2025-12-12T00:00:00Z"),
            event("k7", "cust", "calls", "1", "2025-12-11T23:59:59Z"),
            event("k8", "cust", "calls", "-1", "2026-01-15T00:00:00Z"),
            event("k9", "cust", "hits", "-7", "2026-01-15T00:00:00Z"),
            with_props,
        ]);
        let answer = ingest.graphql(INGEST, json!({"events": batch})).await;
        assert_eq!(
            outcomes(&answer),
            vec![
                o("ACCEPTED", None),
                o("DUPLICATE", None),
                o("REJECTED", Some("CONFLICT")),
                o("REJECTED", Some("UNKNOWN_CUSTOMER")),
                o("REJECTED", Some("UNKNOWN_METER")),
                o("ACCEPTED", None),
                o("REJECTED", Some("OUT_OF_WINDOW")),
                o("ACCEPTED", None),
                o("REJECTED", Some("OUT_OF_WINDOW")),
                o("REJECTED", Some("INVALID_VALUE")),
                o("ACCEPTED", None),
                o("ACCEPTED", None),
            ],
            "{answer}"
        );
        let payload = &ok(&answer)["ingestUsage"];
        assert_eq!(
            (
                payload["accepted"].as_i64(),
                payload["duplicates"].as_i64(),
                payload["rejected"].as_i64()
            ),
            (Some(5), Some(1), Some(6))
        );
        assert_eq!(payload["results"][2]["index"], 2);
        assert!(
            payload["results"][2]["message"]
                .as_str()
                .unwrap()
                .contains("k1")
        );
        assert_eq!(api_support::count(api.db(), "usage_events").await, 5);
        let stored = api_support::strings(
            api.db(),
            "SELECT value FROM usage_events WHERE idempotency_key = 'k9'",
            "value",
        )
        .await;
        assert_eq!(stored, vec!["1"], "COUNT meters ignore the value");

        // Resending: duplicates (key order in properties does not matter), conflicts.
        let mut reordered = event("k10", "cust", "calls", "1", "2026-01-15T00:00:00Z");
        reordered["properties"] = json!({"a": {"x": 1, "y": 2}, "b": 1});
        let answer = ingest
            .graphql(
                INGEST,
                json!({"events": [
                    event("k1", "cust", "calls", "5", "2026-01-15T12:00:00Z"),
                    reordered,
                    event("k6", "cust", "calls", "2", "2025-12-12T00:00:00Z"),
                ]}),
            )
            .await;
        assert_eq!(
            outcomes(&answer),
            vec![
                o("DUPLICATE", None),
                o("DUPLICATE", None),
                o("REJECTED", Some("CONFLICT"))
            ]
        );
        assert_eq!(api_support::count(api.db(), "usage_events").await, 5);

        // Malformed values are refused before anything runs.
        let answer = ingest
            .graphql(
                INGEST,
                json!({"events": [event("k11", "cust", "calls", "1e3", "2026-01-15T00:00:00Z")]}),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT");
        let answer = ingest
            .graphql("mutation { ingestUsage(events: [{idempotencyKey: \"k12\", customerExternalId: \"cust\", meterCode: \"calls\", timestamp: \"2026-01-15T00:00:00Z\"}]) { accepted } }", json!({}))
            .await;
        assert_eq!(
            ok(&answer)["ingestUsage"]["accepted"],
            1,
            "value defaults to 1"
        );

        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn batches_up_to_ten_thousand() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        create_customer(&admin, "cust").await;
        create_meter(&admin, "calls", "SUM").await;
        let events = |n: usize, prefix: &str| -> Value {
            Value::Array(
                (0..n)
                    .map(|i| {
                        event(
                            &format!("{prefix}-{i}"),
                            "cust",
                            "calls",
                            "0.000000000001",
                            "2026-01-15T00:00:00Z",
                        )
                    })
                    .collect(),
            )
        };

        let before = snapshot(api.db()).await;
        let answer = admin
            .graphql("mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted } }", json!({"events": events(10_001, "big")}))
            .await;
        assert_eq!(
            code(&answer),
            "BAD_USER_INPUT",
            "{}",
            &answer.to_string()[..200.min(answer.to_string().len())]
        );
        assert_eq!(snapshot(api.db()).await, before, "nothing written");

        let answer = admin
            .graphql("mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted duplicates rejected } }", json!({"events": events(10_000, "ok")}))
            .await;
        assert_eq!(
            ok(&answer)["ingestUsage"],
            json!({"accepted": 10000, "duplicates": 0, "rejected": 0})
        );
        assert_eq!(api_support::count(api.db(), "usage_events").await, 10_000);

        api.stop().await;
        env.cleanup().await;
    }
}

/// Two batches sharing 300 new keys, in opposite orders, sent at once: each
/// key is stored once, the pair answers 300 ACCEPTED and 300 DUPLICATE in
/// all, and neither batch fails (the insert takes keys in order: no deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_with_the_same_keys() {
    for env in TestEnv::all().await {
        let api = Api::start(&env).await;
        let (_, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        create_customer(&admin, "cust").await;
        create_meter(&admin, "calls", "SUM").await;
        for round in 0..3 {
            let forward: Vec<Value> = (0..300)
                .map(|i| {
                    event(
                        &format!("r{round}-{i}"),
                        "cust",
                        "calls",
                        "1",
                        "2026-01-15T00:00:00Z",
                    )
                })
                .collect();
            let backward: Vec<Value> = forward.iter().rev().cloned().collect();
            let (a, b) = tokio::join!(
                admin.graphql(INGEST, json!({"events": forward})),
                admin.graphql(INGEST, json!({"events": backward})),
            );
            let total = |field: &str| {
                ok(&a)["ingestUsage"][field].as_u64().unwrap_or(0)
                    + ok(&b)["ingestUsage"][field].as_u64().unwrap_or(0)
            };
            assert_eq!(
                (total("accepted"), total("duplicates"), total("rejected")),
                (300, 300, 0),
                "{:?} round {round}",
                env.backend
            );
        }
        assert_eq!(api_support::count(api.db(), "usage_events").await, 900);
        api.stop().await;
        env.cleanup().await;
    }
}

/// What an accepted event stores is what was sent, on both backends (on
/// PostgreSQL the batch travels as one JSON document): exact decimals,
/// microsecond instants, properties with quotes, backslashes, newlines,
/// non-ASCII and nesting, absent and null properties; the payload hash is
/// the one `payload_hash` computes.
#[tokio::test]
async fn accepted_events_read_back_as_sent() {
    use entity::usage_event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

    for env in TestEnv::all().await {
        let api = Api::start_alone(&env).await;
        let (org, admin) = api.org("Acme", Some("2026-01-16T00:00:00Z")).await;
        create_customer(&admin, "cüst \"1\"").await;
        create_meter(&admin, "calls", "SUM").await;
        let tricky = json!({"note": "Ünïcode \"quoted\" \\ back\nline ✓", "nested": {"b": [1, null, true], "a": "12.340"},
                            "big": 9007199254740993_i64});
        let mut sent = vec![
            event(
                "a",
                "cüst \"1\"",
                "calls",
                "12345678901234.5678",
                "2026-01-15T10:20:30.123456Z",
            ),
            event(
                "b",
                "cüst \"1\"",
                "calls",
                "0.000000000001",
                "2026-01-15T00:00:00Z",
            ),
            event(
                "c",
                "cüst \"1\"",
                "calls",
                "1.50",
                "2026-01-15T23:59:59.999999Z",
            ),
            event(
                "ключ \\ \"d\"",
                "cüst \"1\"",
                "calls",
                "0",
                "2026-01-14T00:00:00Z",
            ),
        ];
        sent[0]["properties"] = tricky.clone();
        sent[1]["properties"] = Value::Null;
        sent[2]["properties"] = json!({});
        let answer = admin.graphql(INGEST, json!({"events": sent})).await;
        assert_eq!(ok(&answer)["ingestUsage"]["accepted"], 4, "{answer}");

        let stored = usage_event::Entity::find()
            .filter(usage_event::Column::OrganizationId.eq(org.as_str()))
            .order_by_asc(usage_event::Column::Timestamp)
            .all(api.db())
            .await
            .unwrap();
        let seen: Vec<_> = stored
            .iter()
            .map(|e| {
                (
                    e.idempotency_key.as_str(),
                    e.value.to_string(),
                    e.timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    e.properties.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    "ключ \\ \"d\"",
                    "0".into(),
                    "2026-01-14T00:00:00.000000Z".into(),
                    None
                ),
                (
                    "b",
                    "0.000000000001".into(),
                    "2026-01-15T00:00:00.000000Z".into(),
                    None
                ),
                (
                    "a",
                    "12345678901234.5678".into(),
                    "2026-01-15T10:20:30.123456Z".into(),
                    Some(tricky.clone())
                ),
                (
                    "c",
                    "1.5".into(),
                    "2026-01-15T23:59:59.999999Z".into(),
                    Some(json!({}))
                ),
            ]
        );
        for e in &stored {
            let customer = "cüst \"1\"";
            let expected = workflows::usage::payload_hash(
                customer,
                "calls",
                e.value.get(),
                e.timestamp,
                e.properties.as_ref(),
            );
            assert_eq!(e.payload_hash, expected, "{}", e.idempotency_key);
        }
        // Resending all four is four duplicates: the stored hashes match.
        let answer = admin.graphql(INGEST, json!({"events": sent})).await;
        assert_eq!(ok(&answer)["ingestUsage"]["duplicates"], 4, "{answer}");

        api.stop().await;
        env.cleanup().await;
    }
}
