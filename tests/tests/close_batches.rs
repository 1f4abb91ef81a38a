//! Period closes of one organization run several to a transaction
//! (`VALORA_CLOSE_BATCH`): the delivered job plus due ones claimed beside
//! it. These tests show, on SQLite + embedded queue and PostgreSQL + Redis,
//! that batches really form, that they bill exactly what one-by-one closes
//! bill, and that one subscription whose close cannot succeed costs the
//! others nothing: the batch is rolled back and every job runs on its own.

use std::collections::BTreeMap;

use entity::{JobState, job_run, subscription};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::TestEnv;
use tests::scenario::{Scenario, line_amounts};

const SUBSCRIPTIONS: usize = 12;

/// An organization whose subscriptions all renew on the 1st, so their
/// closes are due at the same instant.
async fn start(env: TestEnv) -> (Scenario, Vec<String>) {
    let s = Scenario::start(
        env,
        json!({ "testClockStart": "2026-01-01T00:00:00Z", "netTermsDays": 30 }),
    )
    .await;
    s.create_meter("calls", "SUM").await;
    let flat = s
        .create_plan(json!({
            "code": "flat", "name": "flat", "interval": "MONTH",
            "prices": [{ "model": "FLAT", "unitAmount": "49.00" }]
        }))
        .await;
    let metered = s
        .create_plan(json!({
            "code": "metered", "name": "metered", "interval": "MONTH",
            "prices": [
                { "model": "FLAT", "unitAmount": "10.00" },
                { "model": "PER_UNIT", "timing": "IN_ARREARS", "meterCode": "calls", "unitAmount": "0.25" }
            ]
        }))
        .await;
    let mut subscriptions = Vec::new();
    let mut events = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        let customer = s.create_customer(&format!("c{i}")).await;
        let plan = if i % 2 == 0 { &flat } else { &metered };
        subscriptions.push(
            s.subscribe(json!({ "customerId": customer, "planId": plan }))
                .await,
        );
        events.push(json!({
            "idempotencyKey": format!("e{i}"), "customerExternalId": format!("c{i}"),
            "meterCode": "calls", "value": format!("{}", 4 * (i + 1)),
            "timestamp": "2026-01-10T00:00:00Z"
        }));
    }
    s.advance("2026-01-10T00:00:00Z").await;
    s.ingest(Value::Array(events)).await;
    (s, subscriptions)
}

async fn close_rows(db: &DatabaseConnection, subscriptions: &[String]) -> Vec<job_run::Model> {
    job_run::Entity::find()
        .filter(job_run::Column::Kind.eq("period_close"))
        .filter(job_run::Column::SubjectId.is_in(subscriptions.iter().cloned()))
        .all(db)
        .await
        .expect("ledger rows")
}

/// Each subscription's invoices as (period start, total, line amounts), in order.
async fn billed(s: &Scenario, subscriptions: &[String]) -> Vec<Vec<(String, String, Vec<String>)>> {
    let mut out = Vec::new();
    for sub in subscriptions {
        out.push(
            s.invoices(sub)
                .await
                .iter()
                .map(|i| {
                    (
                        i["periodStart"].as_str().unwrap_or("").to_string(),
                        i["total"].to_string(),
                        line_amounts(i),
                    )
                })
                .collect(),
        );
    }
    out
}

/// A second environment of the same backend, for a run to compare with.
async fn another(backend: tests::Backend) -> TestEnv {
    match backend {
        tests::Backend::Sqlite => TestEnv::sqlite(),
        tests::Backend::Postgres => TestEnv::postgres()
            .await
            .expect("PostgreSQL was reachable a moment ago"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_due_together_run_in_batches_and_bill_what_single_closes_bill() {
    for env in TestEnv::all().await {
        let backend = env.backend;
        let (s, subscriptions) = start(env).await;
        s.advance("2026-02-01T00:00:00Z").await;
        let rows = close_rows(&s.server.db, &subscriptions).await;
        assert_eq!(rows.len(), SUBSCRIPTIONS, "[{backend:?}] {rows:?}");
        assert!(
            rows.iter().all(|r| r.state == JobState::Succeeded),
            "[{backend:?}] {rows:?}"
        );
        // Jobs claimed together share their claim instant.
        let mut together: BTreeMap<_, usize> = BTreeMap::new();
        for row in &rows {
            *together.entry(row.started_at).or_default() += 1;
        }
        assert!(
            together.values().any(|n| *n > 1),
            "[{backend:?}] every close ran alone: {together:?}"
        );
        let batched = billed(&s, &subscriptions).await;
        s.finish().await;

        // The same month with batches of one.
        let mut env = another(backend).await;
        env.config.jobs.close_batch = 1;
        let (s, subscriptions) = start(env).await;
        s.advance("2026-02-01T00:00:00Z").await;
        let rows = close_rows(&s.server.db, &subscriptions).await;
        let mut claims: Vec<_> = rows.iter().map(|r| r.started_at).collect();
        claims.sort();
        claims.dedup();
        assert_eq!(
            claims.len(),
            SUBSCRIPTIONS,
            "[{backend:?}] batches of one: {rows:?}"
        );
        let single = billed(&s, &subscriptions).await;
        s.finish().await;

        assert_eq!(
            batched, single,
            "[{backend:?}] batched closes bill differently"
        );
        for (i, invoices) in batched.iter().enumerate() {
            // The first invoice, then January's close.
            assert_eq!(
                invoices.len(),
                2,
                "[{backend:?}] subscription {i}: {invoices:?}"
            );
        }
    }
}

/// One month in which subscription 5 cannot be closed; whether its close
/// was claimed together with others (it usually is: every close is due at
/// the same instant, but the sweeper enqueues them one after another).
async fn month_with_a_broken_close(env: TestEnv) -> bool {
    let backend = env.backend;
    let (s, subscriptions) = start(env).await;
    // Corrupt one subscription: its close fails permanently ("negative
    // period index"), in whatever batch it lands.
    let broken = &subscriptions[5];
    subscription::Entity::update_many()
        .col_expr(subscription::Column::PeriodIndex, Expr::value(-1))
        .filter(subscription::Column::Id.eq(broken.as_str()))
        .exec(&s.server.db)
        .await
        .expect("corrupt the subscription");
    s.advance("2026-02-01T00:00:00Z").await;

    let rows = close_rows(&s.server.db, &subscriptions).await;
    let mut batched = false;
    for row in &rows {
        if row.subject_id == *broken {
            assert_eq!(row.state, JobState::Dead, "[{backend:?}] {row:?}");
            let error = row.last_error.clone().unwrap_or_default();
            assert!(
                error.contains("negative period index"),
                "[{backend:?}] {error}"
            );
            batched = rows
                .iter()
                .filter(|r| r.started_at == row.started_at)
                .count()
                > 1;
        } else {
            assert_eq!(row.state, JobState::Succeeded, "[{backend:?}] {row:?}");
        }
    }
    for (i, invoices) in billed(&s, &subscriptions).await.iter().enumerate() {
        let expected = if subscriptions[i] == *broken { 1 } else { 2 };
        assert_eq!(
            invoices.len(),
            expected,
            "[{backend:?}] subscription {i}: {invoices:?}"
        );
    }
    s.finish().await;
    batched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_cannot_succeed_fails_alone() {
    for env in TestEnv::all().await {
        let backend = env.backend;
        let mut batched = month_with_a_broken_close(env).await;
        // The point is the broken close inside a batch: try again if it ran alone.
        for _ in 0..3 {
            if batched {
                break;
            }
            batched = month_with_a_broken_close(another(backend).await).await;
        }
        assert!(
            batched,
            "[{backend:?}] the broken close never shared a batch"
        );
    }
}
