//! Every billing step redelivered — twice in a row, twice concurrently, and
//! with its ledger row set back to RUNNING as if the effect had committed but
//! the job had not been marked — leaves the same invoices (numbers, totals,
//! `contentHash`), the same audit chain and the same subscription state as
//! the single delivery that ran, on SQLite + embedded queue and PostgreSQL +
//! Redis.
//!
//! The jobs are redelivered the way production delivers them: pushed onto
//! their queue (`worker::queues::Queues::push`), picked up by the server's
//! embedded workers and run by `Runtime::execute` (ledger claim, production
//! step from `workflows::steps::run`, outcome recorded). The step outcomes
//! are read from the `valora_jobs_total{kind, outcome}` counters.
//!
//! (The `tests` crate does not depend on `workflows`, so it cannot name
//! `workflows::steps::run` or a `Clock` to call a step by hand; going through
//! the workers exercises the same steps plus the claim in front of them.)
//!
//! With the row back to RUNNING only one of the two concurrent deliveries
//! wins the claim; the step it runs must find its work done by its own state
//! checks (period index moved on, invoice no longer DRAFT / OPEN, change
//! already prorated, subscription no longer in its first period) and end
//! Skipped. The start of a subscription still in its first period has no such
//! check: it recomputes the first invoice against the lines already billed.
//! Unchanged, that finds nothing to bill (Done, nothing written); after a
//! mid-period plan change it computes a second first invoice, which only the
//! unique `invoices(organization_id, billing_key)` key stops — the job fails
//! with "concurrent update, retry" and would be retried until DEAD. The test
//! reports that as a failure (nothing is duplicated, but the step is not a
//! no-op).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::{JobState, audit_event, invoice, invoice_line, job_run, outbox};
use entity::{pending_invoice_item, subscription};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use serde_json::{Value, json};
use tests::TestEnv;
use tests::scenario::Scenario;
use worker::queues::Queues;

/// `valora_jobs_total{kind, outcome}`, as rendered by the process's recorder.
type Outcomes = BTreeMap<(String, String), u64>;

fn outcomes() -> Outcomes {
    let text = worker::telemetry::init_metrics().render();
    let mut map = Outcomes::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("valora_jobs_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let mut kind = String::new();
        let mut outcome = String::new();
        for pair in labels.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                let v = v.trim_matches('"').to_string();
                match k {
                    "kind" => kind = v,
                    "outcome" => outcome = v,
                    _ => {}
                }
            }
        }
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *map.entry((kind, outcome)).or_default() += value;
    }
    map
}

/// `after − before`, per outcome (all kinds summed) and per (kind, outcome).
fn delta(before: &Outcomes, after: &Outcomes) -> (BTreeMap<String, u64>, Outcomes) {
    let mut by_outcome = BTreeMap::new();
    let mut by_kind = Outcomes::new();
    for (key, value) in after {
        let d = value.saturating_sub(before.get(key).copied().unwrap_or(0));
        if d > 0 {
            *by_outcome.entry(key.1.clone()).or_default() += d;
            by_kind.insert(key.clone(), d);
        }
    }
    (by_outcome, by_kind)
}

fn total(by_outcome: &BTreeMap<String, u64>) -> u64 {
    by_outcome.values().sum()
}

/// (status, number, total in minor units, contentHash, finalizedAt).
type InvoiceFacts = (String, Option<String>, i64, Option<String>, String);

/// Everything a duplicated effect would change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// billing key → (status, number, total, contentHash, finalizedAt).
    invoices: BTreeMap<String, InvoiceFacts>,
    /// (invoice billing key, position, kind, amount) of every line.
    lines: BTreeSet<(String, i32, String, i64)>,
    /// (source key, amount, invoice billing key) of every pending proration item.
    pending: BTreeSet<(String, i64, Option<String>)>,
    /// subscription id → (status, period index, plan, period start).
    subscriptions: BTreeMap<String, (String, i32, String, String)>,
    audit_events: u64,
    last_audit_hash: String,
    outbox_rows: u64,
}

async fn snapshot(db: &DatabaseConnection, org: &str) -> Snapshot {
    let invoices = invoice::Entity::find()
        .filter(invoice::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("invoices");
    let key_of: BTreeMap<String, String> = invoices
        .iter()
        .map(|i| (i.id.clone(), i.billing_key.clone()))
        .collect();
    let lines = invoice_line::Entity::find()
        .filter(invoice_line::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("invoice lines")
        .into_iter()
        .map(|l| {
            (
                key_of.get(&l.invoice_id).cloned().unwrap_or(l.invoice_id),
                l.position,
                format!("{:?}", l.kind),
                l.amount_minor,
            )
        })
        .collect();
    let pending = pending_invoice_item::Entity::find()
        .filter(pending_invoice_item::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("pending items")
        .into_iter()
        .map(|p| {
            (
                p.source_key,
                p.amount_minor,
                p.invoice_id
                    .map(|id| key_of.get(&id).cloned().unwrap_or(id)),
            )
        })
        .collect();
    let subscriptions = subscription::Entity::find()
        .filter(subscription::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("subscriptions")
        .into_iter()
        .map(|s| {
            (
                s.id,
                (
                    s.status.to_string(),
                    s.period_index,
                    s.plan_id,
                    format!("{:?}", s.current_period_start),
                ),
            )
        })
        .collect();
    let audit_events = audit_event::Entity::find()
        .filter(audit_event::Column::OrganizationId.eq(org))
        .count(db)
        .await
        .expect("audit count");
    let last_audit_hash = audit_event::Entity::find()
        .filter(audit_event::Column::OrganizationId.eq(org))
        .order_by_desc(audit_event::Column::Seq)
        .one(db)
        .await
        .expect("last audit event")
        .map(|e| e.hash)
        .unwrap_or_default();
    let outbox_rows = outbox::Entity::find()
        .filter(outbox::Column::OrganizationId.eq(org))
        .count(db)
        .await
        .expect("outbox count");
    Snapshot {
        invoices: invoices
            .into_iter()
            .map(|i| {
                (
                    i.billing_key,
                    (
                        i.status.to_string(),
                        i.number,
                        i.total_minor,
                        i.content_hash,
                        format!("{:?}", i.finalized_at),
                    ),
                )
            })
            .collect(),
        lines,
        pending,
        subscriptions,
        audit_events,
        last_audit_hash,
        outbox_rows,
    }
}

async fn ledger(db: &DatabaseConnection, org: &str) -> Vec<job_run::Model> {
    job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(org))
        .order_by_asc(job_run::Column::RunAt)
        .order_by_asc(job_run::Column::JobKey)
        .all(db)
        .await
        .expect("job runs")
}

/// (contentHash, number, total) of every invoice, as the API reports them.
async fn api_invoices(
    s: &Scenario,
    subscriptions: &BTreeMap<String, &'static str>,
) -> BTreeSet<(String, String, String)> {
    let mut all = BTreeSet::new();
    for sub in subscriptions.keys() {
        for inv in s.invoices(sub).await {
            all.insert((
                inv["contentHash"].as_str().unwrap_or("-").to_string(),
                inv["number"].as_str().unwrap_or("-").to_string(),
                inv["total"].as_str().unwrap_or("-").to_string(),
            ));
        }
    }
    all
}

async fn verify_chain(s: &Scenario) -> Value {
    s.gql(
        "{ verifyAuditChain { valid checked firstBrokenId } }",
        json!({}),
    )
    .await["verifyAuditChain"]
        .clone()
}

/// Pushes every job of `rows` onto its queue: twice at once when
/// `concurrent`, else once.
async fn redeliver(queues: &Queues, rows: &[job_run::Model], concurrent: bool) {
    for row in rows {
        let job = worker::runtime::job_of(row).expect("ledger row names a job kind");
        if concurrent {
            let (a, b) = tokio::join!(queues.push(&job), queues.push(&job));
            a.expect("push");
            b.expect("push");
        } else {
            queues.push(&job).await.expect("push");
        }
    }
}

/// Waits until the workers have recorded at least `at_least` more outcomes
/// than `before`, then a little longer for stragglers (sweeper pushes).
async fn wait_outcomes(before: &Outcomes, at_least: u64, what: &str) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (by_outcome, _) = delta(before, &outcomes());
        if total(&by_outcome) >= at_least {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return delta(before, &outcomes()).0;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {by_outcome:?} of {at_least} deliveries processed after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until none of `keys` is QUEUED or RUNNING.
async fn wait_settled(db: &DatabaseConnection, org: &str, keys: &BTreeSet<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy: Vec<String> = ledger(db, org)
            .await
            .into_iter()
            .filter(|r| keys.contains(&r.job_key))
            .filter(|r| matches!(r.state, JobState::Queued | JobState::Running))
            .map(|r| format!("{} {}", r.job_key, r.state))
            .collect();
        if busy.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still busy after 30 s: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn usage(customer: &str, key: &str, value: &str, at: &str) -> Value {
    json!({ "idempotencyKey": key, "customerExternalId": customer, "meterCode": "api_calls", "value": value, "timestamp": at })
}

fn flat_plan(code: &str, amount: &str) -> Value {
    json!({
        "code": code, "name": code, "interval": "MONTH",
        "prices": [{ "model": "FLAT", "unitAmount": amount }]
    })
}

/// Builds the scenario: flat, hybrid (flat + PER_UNIT usage), two mid-period
/// plan changes (pending prorations and a proration invoice), three
/// subscriptions still in their first period; net terms short enough for
/// invoices to go overdue. Returns the subscription ids with a label.
async fn build(s: &Scenario) -> BTreeMap<String, &'static str> {
    s.create_meter("api_calls", "SUM").await;
    let c1 = s.create_customer("c1").await;
    let c2 = s.create_customer("c2").await;
    let c3 = s.create_customer("c3").await;
    let c4 = s.create_customer("c4").await;
    let c5 = s.create_customer("c5").await;
    let c6 = s.create_customer("c6").await;
    let basic = s.create_plan(flat_plan("basic", "100.00")).await;
    let a = s.create_plan(flat_plan("a", "100.00")).await;
    let b = s.create_plan(flat_plan("b", "150.00")).await;
    let hybrid = s
        .create_plan(json!({
            "code": "hybrid", "name": "Hybrid", "interval": "MONTH",
            "prices": [
                { "model": "FLAT", "unitAmount": "20.00" },
                { "model": "PER_UNIT", "timing": "IN_ARREARS", "meterCode": "api_calls", "unitAmount": "0.10" }
            ]
        }))
        .await;
    let flat = s
        .subscribe(json!({ "customerId": c1, "planId": basic }))
        .await;
    let metered = s
        .subscribe(json!({ "customerId": c2, "planId": hybrid }))
        .await;
    let changed = s.subscribe(json!({ "customerId": c3, "planId": a })).await;

    s.advance("2026-01-16T00:00:00Z").await;
    s.ingest(json!([
        usage("c2", "e1", "50", "2026-01-05T10:00:00Z"),
        usage("c2", "e2", "60", "2026-01-10T10:00:00Z"),
        usage("c2", "e3", "40", "2026-01-14T10:00:00Z"),
    ]))
    .await;
    let change = "mutation($input: ChangeSubscriptionPlanInput!) { changeSubscriptionPlan(input: $input) { id } }";
    s.gql(
        change,
        json!({ "input": { "subscriptionId": changed, "planId": b } }),
    )
    .await;
    s.gql(
        change,
        json!({ "input": { "subscriptionId": flat, "planId": b, "prorationBehavior": "ALWAYS_INVOICE" } }),
    )
    .await;
    s.advance("2026-01-16T00:00:00Z").await; // the proration jobs
    s.advance("2026-02-01T00:00:00Z").await;
    s.advance("2026-02-10T00:00:00Z").await;
    s.ingest(json!([usage("c2", "e4", "70", "2026-02-03T10:00:00Z")]))
        .await;
    // Three more still in their first period at the end, two of them changed
    // mid-period (a redelivered start step then has to recognize a first
    // period whose terms changed since it was billed).
    let late_plain = s
        .subscribe(json!({ "customerId": c6, "planId": basic }))
        .await;
    let late = s
        .subscribe(json!({ "customerId": c4, "planId": basic }))
        .await;
    let late_invoiced = s
        .subscribe(json!({ "customerId": c5, "planId": basic }))
        .await;
    s.advance("2026-02-20T00:00:00Z").await;
    s.gql(
        change,
        json!({ "input": { "subscriptionId": late, "planId": b } }),
    )
    .await;
    s.gql(
        change,
        json!({ "input": { "subscriptionId": late_invoiced, "planId": b, "prorationBehavior": "ALWAYS_INVOICE" } }),
    )
    .await;
    // An hour past the billing instant: the grace period (see below) is over.
    s.advance("2026-03-01T01:00:00Z").await;
    BTreeMap::from([
        (flat, "flat (ALWAYS_INVOICE change Jan 16)"),
        (metered, "hybrid flat + usage"),
        (changed, "changed (CREATE_PRORATIONS Jan 16)"),
        (late_plain, "first-period, unchanged"),
        (late, "first-period, CREATE_PRORATIONS change Feb 20"),
        (late_invoiced, "first-period, ALWAYS_INVOICE change Feb 20"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_redelivered_changes_nothing() {
    // Redeliveries that did not end as a no-op (Skipped / duplicate), across backends.
    let mut anomalies: Vec<String> = Vec::new();
    for env in TestEnv::all().await {
        let backend = env.backend;
        let started = Instant::now();
        let s = Scenario::start(
            env,
            // A grace period, so drafts are finalized by their own job (with
            // none, the step that drafts an invoice finalizes it at once).
            json!({ "testClockStart": "2026-01-01T00:00:00Z", "netTermsDays": 20, "gracePeriodHours": 1 }),
        )
        .await;
        let subscriptions = build(&s).await;
        let db = s.server.db.clone();
        let org = s.gql("{ organization { id } }", json!({})).await["organization"]["id"]
            .as_str()
            .expect("organization id")
            .to_string();

        // The jobs that ran; the rest are future work, not due yet.
        let rows = ledger(&db, &org).await;
        let clock_now = chrono::DateTime::parse_from_rfc3339("2026-03-01T01:00:00Z")
            .expect("instant")
            .with_timezone(&Utc);
        let ran: Vec<job_run::Model> = rows
            .iter()
            .filter(|r| r.state == JobState::Succeeded)
            .cloned()
            .collect();
        for row in rows.iter().filter(|r| r.state != JobState::Succeeded) {
            assert!(
                row.state == JobState::Queued && row.run_at > clock_now,
                "[{backend:?}] unexpected ledger row before redelivery: {row:?}"
            );
        }
        let kinds: BTreeSet<&str> = ran.iter().map(|r| r.kind.as_str()).collect();
        for kind in [
            "subscription_start",
            "period_close",
            "proration",
            "invoice_finalize",
            "invoice_overdue",
        ] {
            assert!(
                kinds.contains(kind),
                "[{backend:?}] no {kind} job ran: {kinds:?}"
            );
        }

        let baseline = snapshot(&db, &org).await;
        let baseline_api = api_invoices(&s, &subscriptions).await;
        let chain = verify_chain(&s).await;
        assert_eq!(chain["valid"], true, "[{backend:?}] {chain}");
        assert!(
            baseline.invoices.values().all(|i| i.3.is_some()),
            "[{backend:?}] every invoice is finalized (has a contentHash) before redelivery: {:?}",
            baseline.invoices
        );
        let queues = Queues::open(&s.env.config, &db).await.expect("queues open");
        let n = ran.len() as u64;

        // 1. Redelivery of SUCCEEDED jobs: twice in a row, then twice at once.
        //    The claim finds the row SUCCEEDED: acknowledged, no step runs.
        for (round, concurrent) in [(1, false), (2, false), (3, true)] {
            let before = outcomes();
            redeliver(&queues, &ran, concurrent).await;
            let expected = if concurrent { 2 * n } else { n };
            let seen = wait_outcomes(&before, expected, "succeeded redelivery").await;
            assert_eq!(
                seen.keys().collect::<Vec<_>>(),
                vec!["duplicate"],
                "[{backend:?}] round {round}: a SUCCEEDED job was run again: {seen:?}"
            );
            assert_eq!(
                snapshot(&db, &org).await,
                baseline,
                "[{backend:?}] round {round}"
            );
        }
        let after_duplicates = ledger(&db, &org).await;
        assert_eq!(
            after_duplicates, rows,
            "[{backend:?}] acknowledging duplicates changed the ledger"
        );

        // 2. The claim succeeds again: every ledger row set back to RUNNING
        //    with an expired lease (the effect committed, the row not marked),
        //    each job pushed twice at once. Exactly one delivery runs the
        //    step, whose own state checks must make it a no-op (Skipped).
        let keys: BTreeSet<String> = ran.iter().map(|r| r.job_key.clone()).collect();
        let first_period_starts = ran
            .iter()
            .filter(|r| r.kind == "subscription_start")
            .filter(|r| {
                baseline
                    .subscriptions
                    .get(&r.subject_id)
                    .is_some_and(|sub| sub.0 == "ACTIVE" && sub.1 == 0)
            })
            .count() as u64;
        let mut step_outcomes = Outcomes::new();
        for round in 1..=2 {
            let attempts_before: BTreeMap<String, i32> = ledger(&db, &org)
                .await
                .into_iter()
                .map(|r| (r.job_key, r.attempts))
                .collect();
            let expired = Utc::now() - chrono::Duration::minutes(5);
            let reset = job_run::Entity::update_many()
                .col_expr(job_run::Column::State, Expr::value(JobState::Running))
                .col_expr(job_run::Column::NextAttemptAt, Expr::value(Some(expired)))
                .col_expr(
                    job_run::Column::FinishedAt,
                    Expr::value(Option::<chrono::DateTime<Utc>>::None),
                )
                .filter(job_run::Column::JobKey.is_in(keys.iter().cloned()))
                .exec(&db)
                .await
                .expect("reset ledger rows");
            assert_eq!(reset.rows_affected, n);
            let before = outcomes();
            redeliver(&queues, &ran, true).await;
            wait_settled(&db, &org, &keys, "RUNNING redelivery").await;
            wait_outcomes(&before, 2 * n, "RUNNING redelivery").await;
            let (seen, by_kind) = delta(&before, &outcomes());
            for (k, v) in &by_kind {
                if k.1 != "duplicate" {
                    *step_outcomes.entry(k.clone()).or_default() += v;
                }
            }
            let after = ledger(&db, &org).await;
            let now_snapshot = snapshot(&db, &org).await;
            assert_eq!(
                now_snapshot, baseline,
                "[{backend:?}] RUNNING round {round} duplicated an effect; outcomes {by_kind:?}"
            );
            for r in after.iter().filter(|r| keys.contains(&r.job_key)) {
                assert_eq!(
                    r.attempts,
                    attempts_before[&r.job_key] + 1,
                    "[{backend:?}] round {round}: {} ran {} times instead of once",
                    r.job_key,
                    r.attempts - attempts_before[&r.job_key]
                );
            }
            // Every step is Skipped by its state check, except the start of a
            // subscription still in its first period, which has no state to
            // check: it recomputes the first invoice against the lines already
            // billed. When they all match it writes nothing and reports Done
            // (the snapshot above is unchanged).
            for ((kind, outcome), count) in &by_kind {
                let allowed = match outcome.as_str() {
                    "duplicate" | "skipped" => true,
                    "succeeded" => kind == "subscription_start" && *count <= first_period_starts,
                    _ => false,
                };
                if !allowed {
                    anomalies.push(format!(
                        "[{backend:?}] RUNNING round {round}: {count} {kind} redelivery(ies) ended {outcome}"
                    ));
                }
            }
            // A redelivery that failed wrote nothing (snapshot unchanged) but
            // would be retried until DEAD: record it, then mark the row
            // SUCCEEDED again (as it was) so the retries stop.
            for r in after
                .iter()
                .filter(|r| keys.contains(&r.job_key) && r.state != JobState::Succeeded)
            {
                anomalies.push(format!(
                    "[{backend:?}] RUNNING round {round}: {} (subscription {:?}) -> {} after \
                     attempt {}: {:?}; nothing written",
                    r.job_key,
                    subscriptions.get(&r.subject_id).copied().unwrap_or("?"),
                    r.state,
                    r.attempts,
                    r.last_error
                ));
                job_run::Entity::update_many()
                    .col_expr(job_run::Column::State, Expr::value(JobState::Succeeded))
                    .col_expr(job_run::Column::FinishedAt, Expr::value(Some(Utc::now())))
                    .col_expr(
                        job_run::Column::NextAttemptAt,
                        Expr::value(Option::<chrono::DateTime<Utc>>::None),
                    )
                    .filter(job_run::Column::Id.eq(r.id.as_str()))
                    .exec(&db)
                    .await
                    .expect("restore ledger row");
            }
            assert!(
                seen.get("skipped").copied().unwrap_or(0) + first_period_starts >= n,
                "[{backend:?}] RUNNING round {round}: too few Skipped: {by_kind:?}"
            );
        }

        // 3. Nothing changed.
        let end = snapshot(&db, &org).await;
        assert_eq!(end, baseline, "[{backend:?}]");
        assert_eq!(api_invoices(&s, &subscriptions).await, baseline_api);
        let chain_after = verify_chain(&s).await;
        assert_eq!(chain_after["valid"], true, "[{backend:?}] {chain_after}");
        assert_eq!(chain_after["checked"], chain["checked"], "[{backend:?}]");
        let final_rows = ledger(&db, &org).await;
        assert_eq!(
            final_rows.len(),
            rows.len(),
            "[{backend:?}] new ledger rows"
        );
        let dead: Vec<&job_run::Model> = final_rows
            .iter()
            .filter(|r| matches!(r.state, JobState::Dead | JobState::Failed))
            .collect();
        assert!(dead.is_empty(), "[{backend:?}] {dead:#?}");

        let reran: Vec<String> = step_outcomes
            .iter()
            .map(|((kind, outcome), count)| format!("{kind} {outcome} {count}"))
            .collect();
        println!(
            "step idempotence [{backend:?}]: {n} jobs redelivered 8x each (4 acked as duplicates, \
             4 with the ledger row back to RUNNING: steps re-run {}), invoices {} = {}, \
             audit {} = {}, chain valid ({} events), {:.1} s",
            reran.join(", "),
            baseline.invoices.len(),
            end.invoices.len(),
            baseline.audit_events,
            end.audit_events,
            chain_after["checked"],
            started.elapsed().as_secs_f64(),
        );
        s.finish().await;
    }
    assert!(
        anomalies.is_empty(),
        "redelivered steps that were not no-ops (no effect was duplicated):\n{}",
        anomalies.join("\n")
    );
}
