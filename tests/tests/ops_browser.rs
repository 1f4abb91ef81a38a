//! The ops page in a real browser: an operator signs in on `/ops`, sees a
//! dead job with its last error, clicks Retry, and the row turns SUCCEEDED
//! because the workers really ran the step. Driven by
//! `tests/browser/ops.mjs` (playwright-core + Debian's chromium).
//!
//! Needs node, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in
//! `tests/browser`; without them the test prints "skipped" and returns,
//! unless `VALORA_REQUIRE_SERVERS=1` (CI), where it fails.
//! `VALORA_OPS_SCREENSHOT=docs/screenshots/ops-dashboard.png` refreshes the
//! committed screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{TimeZone, Utc};
use entity::{JobState, job_run};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::TestEnv;
use tests::scenario::Scenario;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed".into());
    }
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is missing (apt-get install -y chromium)"
        ));
    }
    let playwright = repo().join("tests/browser/node_modules/playwright-core/package.json");
    if !playwright.exists() {
        return Some("playwright-core is not installed (npm ci in tests/browser)".into());
    }
    None
}

fn require_tools() -> bool {
    matches!(
        std::env::var("VALORA_REQUIRE_SERVERS").as_deref(),
        Ok("1") | Ok("true")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_from_the_ops_page() {
    if let Some(why) = missing_tools() {
        assert!(!require_tools(), "browser test cannot run: {why}");
        println!("skipped: {why}");
        return;
    }
    let s = Scenario::start(
        TestEnv::sqlite(),
        json!({ "name": "Acme Ops", "testClockStart": "2026-01-01T00:00:00Z", "netTermsDays": 90 }),
    )
    .await;
    let plan = s
        .create_plan(json!({ "code": "team", "name": "Team", "interval": "MONTH",
            "prices": [{ "model": "FLAT", "unitAmount": "49.00" }] }))
        .await;
    let trial = s
        .create_plan(
            json!({ "code": "trial", "name": "Trial", "interval": "MONTH", "trialDays": 14,
            "prices": [{ "model": "FLAT", "unitAmount": "19.00" }] }),
        )
        .await;
    let customer = s.create_customer("acme").await;
    let sub = s
        .subscribe(json!({ "customerId": customer, "planId": plan }))
        .await;
    let other = s.create_customer("globex").await;
    s.subscribe(json!({ "customerId": other, "planId": trial }))
        .await;
    s.advance("2026-01-01T00:00:00Z").await;
    let invoice = s.invoices(&sub).await[0]["id"]
        .as_str()
        .expect("invoice id")
        .to_string();

    // The overdue job of the first invoice died after 8 attempts (as in api_jobs.rs).
    let key = format!("invoice_overdue:{invoice}:overdue");
    let due = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
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
    assert_eq!(s.subscription(&sub).await["status"], "ACTIVE");

    let operator = s
        .gql(
            "mutation { createApiKey(role: OPERATOR) { apiKey } }",
            json!({}),
        )
        .await["createApiKey"]["apiKey"]
        .as_str()
        .expect("key")
        .to_string();
    let operator_client = s.anonymous.with_key(&operator);
    // One later overdue job set aside, so the page shows a DISCARDED row too.
    let queued = operator_client
        .graphql(
            "{ jobs(kind: INVOICE_OVERDUE, state: QUEUED) { nodes { id } } }",
            json!({}),
        )
        .await;
    if let Some(id) = queued["data"]["jobs"]["nodes"][0]["id"].as_str() {
        let answer = operator_client
            .graphql(
                "mutation($id: ID!) { discardJob(id: $id) { state } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            answer["data"]["discardJob"]["state"], "DISCARDED",
            "{answer}"
        );
    }

    let screenshot = std::env::var("VALORA_OPS_SCREENSHOT")
        .map(|p| repo().join(p))
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("ops-{}.png", tests::unique_suffix()))
        });
    let base = format!("http://{}", s.server.addr);
    let script = repo().join("tests/browser/ops.mjs");
    let (node_key, node_shot) = (operator.clone(), screenshot.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(base)
            .arg(node_key)
            .arg(node_shot)
            .output()
    })
    .await
    .expect("node runs")
    .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser flow failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let seen: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result line: {stdout}"));
    println!("browser saw: {seen}");
    assert_eq!(seen["key"], key.as_str(), "{seen}");
    assert_eq!(seen["lastError"], "database: connection refused");
    assert_eq!(seen["deadCount"], "1");
    assert_eq!(seen["firstState"], "DEAD", "dead jobs come first: {seen}");
    for state in ["DEAD", "SUCCEEDED", "DISCARDED"] {
        assert!(
            seen["states"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == state)),
            "the table shows {state}: {seen}"
        );
    }
    assert!(
        seen["refused"].as_str().is_some_and(|r| !r.is_empty()),
        "{seen}"
    );
    assert!(
        seen["toast"]
            .as_str()
            .is_some_and(|t| t.contains("Retried")),
        "{seen}"
    );
    assert_eq!(
        seen["attempts"], "1 / 8",
        "one attempt after the reset: {seen}"
    );
    assert_eq!(seen["remaining"], 0);
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // The retried step really ran: the invoice is overdue.
    assert_eq!(s.subscription(&sub).await["status"], "PAST_DUE");
    let done = operator_client
        .graphql(
            "{ jobs(kind: INVOICE_OVERDUE, first: 100) { nodes { id key state } } }",
            json!({}),
        )
        .await;
    let row = done["data"]["jobs"]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|j| j["key"] == key.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(row["state"], "SUCCEEDED", "{done}");
    if std::env::var("VALORA_OPS_SCREENSHOT").is_err() {
        let _ = std::fs::remove_file(&screenshot);
    }
    s.finish().await;
}
