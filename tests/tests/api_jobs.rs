//! Ops through GraphQL: an operator sees a dead job with its last error,
//! retries it, and the real step runs through the queues and workers.

use chrono::{TimeZone, Utc};
use entity::{JobState, job_run};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tests::TestEnv;
use tests::scenario::Scenario;

const DEAD_JOBS: &str =
    "{ jobs(state: DEAD) { nodes { id key kind state attempts lastError subjectId } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_and_it_runs_for_real() {
    for env in TestEnv::all().await {
        let s = Scenario::start(
            env,
            json!({ "testClockStart": "2026-01-01T00:00:00Z", "netTermsDays": 90 }),
        )
        .await;
        let customer = s.create_customer("acme").await;
        let plan = s
            .create_plan(json!({ "code": "p", "name": "P", "interval": "MONTH",
                "prices": [{ "model": "FLAT", "unitAmount": "10.00" }] }))
            .await;
        let sub = s
            .subscribe(json!({ "customerId": customer, "planId": plan }))
            .await;
        s.advance("2026-01-01T00:00:00Z").await;
        let invoice = s.invoices(&sub).await[0].clone();
        let invoice_id = invoice["id"].as_str().expect("invoice id").to_string();

        // The overdue job of that invoice died (e.g. the database was down for
        // every attempt): its ledger row is DEAD with the last error.
        let due = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let key = format!("invoice_overdue:{invoice_id}:overdue");
        // Finalization queued it (due Apr 1); make it DEAD as after 8 failed attempts.
        let marked = job_run::Entity::update_many()
            .col_expr(job_run::Column::State, Expr::value(JobState::Dead))
            .col_expr(job_run::Column::Attempts, Expr::value(8))
            .col_expr(
                job_run::Column::LastError,
                Expr::value(Some("database: connection refused".to_string())),
            )
            .col_expr(job_run::Column::FinishedAt, Expr::value(Some(due)))
            .filter(job_run::Column::JobKey.eq(&key))
            .exec(&s.server.db)
            .await
            .expect("dead job");
        assert_eq!(
            marked.rows_affected, 1,
            "finalization queued the overdue job"
        );
        s.advance("2026-04-02T00:00:00Z").await;
        assert_eq!(
            s.subscription(&sub).await["status"],
            "ACTIVE",
            "a dead job does nothing"
        );

        // Operators see it; READ_ONLY and INGEST keys may not.
        let operator = s
            .gql(
                "mutation { createApiKey(role: OPERATOR) { apiKey } }",
                json!({}),
            )
            .await["createApiKey"]["apiKey"]
            .as_str()
            .expect("key")
            .to_string();
        let operator = s.anonymous.with_key(&operator);
        let dead = operator.graphql(DEAD_JOBS, json!({})).await;
        let nodes = dead["data"]["jobs"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(nodes.len(), 1, "{dead}");
        assert_eq!(nodes[0]["key"], key.as_str());
        assert_eq!(nodes[0]["lastError"], "database: connection refused");
        let job_id = nodes[0]["id"].as_str().expect("job id").to_string();
        for role in ["READ_ONLY", "INGEST"] {
            let key = s
                .gql(
                    &format!("mutation {{ createApiKey(role: {role}) {{ apiKey }} }}"),
                    json!({}),
                )
                .await["createApiKey"]["apiKey"]
                .as_str()
                .expect("key")
                .to_string();
            let answer = s
                .anonymous
                .with_key(&key)
                .graphql(DEAD_JOBS, json!({}))
                .await;
            assert_eq!(
                answer["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{role}: {answer}"
            );
        }

        // Another organization's operator: the job does not exist for it.
        let token = s.env.config.admin_token.clone().expect("token");
        let other = s
            .anonymous
            .with_key(&token)
            .graphql(
                "mutation { createOrganization(input: { name: \"Other\", currency: \"EUR\" }) { apiKey } }",
                json!({}),
            )
            .await["data"]["createOrganization"]["apiKey"]
            .as_str()
            .expect("other key")
            .to_string();
        let answer = s
            .anonymous
            .with_key(&other)
            .graphql(
                "mutation($id: ID!) { retryJob(id: $id) { state } }",
                json!({ "id": job_id }),
            )
            .await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{answer}"
        );

        // Retry: the real overdue step runs and the subscription goes PAST_DUE.
        let answer = operator
            .graphql(
                "mutation($id: ID!) { retryJob(id: $id) { state attempts } }",
                json!({ "id": job_id }),
            )
            .await;
        assert_eq!(answer["data"]["retryJob"]["state"], "QUEUED", "{answer}");
        assert_eq!(answer["data"]["retryJob"]["attempts"], 0);
        s.advance("2026-04-02T00:00:00Z").await;
        assert_eq!(s.subscription(&sub).await["status"], "PAST_DUE");
        let done = operator
            .graphql(
                "{ jobs(kind: INVOICE_OVERDUE) { nodes { id state attempts } } }",
                json!({}),
            )
            .await;
        let retried = done["data"]["jobs"]["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == job_id.as_str()).cloned())
            .unwrap_or_default();
        assert_eq!(retried["state"], "SUCCEEDED", "{done}");
        assert_eq!(retried["attempts"], 1, "one attempt after the reset");

        // A finished job cannot be discarded; the reason names its state.
        let answer = operator
            .graphql(
                "mutation($id: ID!) { discardJob(id: $id) { state } }",
                json!({ "id": job_id }),
            )
            .await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{answer}"
        );
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("SUCCEEDED")
        );
        s.finish().await;
    }
}
