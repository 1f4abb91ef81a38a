//! Chaos: billing is exactly-once under worker SIGKILLs, Redis loss and
//! dropped database connections (SPEC §2.4).
//!
//! One scenario (an organization on a test clock, ~300 subscriptions on flat,
//! hybrid, graduated and trial plans, January usage) is built once in
//! database A and copied to database B with `CREATE DATABASE b TEMPLATE a`,
//! so both hold the same ids (content hashes include price ids and are
//! comparable). B is billed to 2026-04-01 by three quiet worker binaries (the
//! baseline); A is billed to the same instant by three worker binaries that
//! are SIGKILLed and restarted every 300–600 ms, with the chaos run's Redis
//! database flushed once and every database connection dropped once while
//! the work is in flight. A must end with exactly B's invoices, gapless
//! numbers, no dead job and a valid audit chain.
//!
//! Everything runs inside the chaotic catch-up: subscription starts, trial
//! expiries, FIRST invoices, period closes, prorations, finalizations. (This
//! test found that a start delayed past period 0 lost its FIRST invoice when
//! the period close won the race; both steps now write it through
//! `ensure_first_invoice`, and `missing_first_invoices` keeps watching.)
//! `VALORA_CHAOS_PRESTART=1` runs January's work quietly before the copy
//! instead. `VALORA_CHAOS_SEED` replays a kill schedule.
//!
//! PostgreSQL + Redis only (`Env::postgres()`): skipped with a printed reason
//! when they are unreachable, a failure under `VALORA_REQUIRE_SERVERS=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::{Env, pg_admin_url, redis_url};
use entity::{
    Aggregation, BillingAnchor, BillingTiming, Interval, JobState, PriceModel, TestClockStatus,
    invoice, job_run, organization, outbox,
};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use workflows::catalog::{MeterSpec, PlanSpec, PriceSpec, TierSpec};
use workflows::clock::FixedClock;
use workflows::customers::CustomerSpec;
use workflows::subscriptions::NewSubscription;
use workflows::tenancy::{NewKey, NewOrganization};
use workflows::usage::EventInput;

const SUBSCRIPTIONS: usize = 300;
const WORKERS: usize = 3;
const ACTOR: &str = "chaos-test";
/// Longest wait for a run to settle (test clock READY and nothing due left).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// How long the chaos driver keeps killing workers at most.
const KILL_PHASE_LIMIT: Duration = Duration::from_secs(90);

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal literal")
}

// ---------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------

fn flat(amount: &str, description: &str) -> PriceSpec {
    PriceSpec {
        model: PriceModel::Flat,
        timing: BillingTiming::InAdvance,
        meter_code: None,
        unit_amount: Some(dec(amount)),
        package_size: None,
        tiers: None,
        description: Some(description.into()),
    }
}

fn plan(code: &str, trial_days: i32, prices: Vec<PriceSpec>) -> PlanSpec {
    PlanSpec {
        code: code.into(),
        name: code.into(),
        interval: Interval::Month,
        interval_count: 1,
        trial_days,
        prices,
    }
}

/// Builds the scenario in `db` (migrated, empty) and returns the organization id.
///
/// The clock starts at 2026-01-01; subscriptions start on it or on a later
/// January day (some with a CALENDAR anchor, so their first period is a
/// prorated partial month); the clock then moves to 2026-01-20 with no worker
/// running (usage must not be more than 5 minutes ahead of the
/// organization's now) and January usage is ingested for every metered
/// subscription. Nothing has been billed yet: the subscription starts and
/// trial expiries wait in the outbox for the workers.
async fn build_scenario(db: &DatabaseConnection) -> String {
    let start = at(2026, 1, 1);
    let clock = FixedClock(start);
    let (org, _key) = workflows::tenancy::create_organization(
        db,
        &clock,
        ACTOR,
        NewOrganization {
            name: "Chaos Co".into(),
            currency: "USD".into(),
            timezone: "UTC".into(),
            // Long net terms: no invoice becomes overdue before April.
            net_terms_days: 365,
            grace_period_hours: 0,
            late_usage_window_days: 35,
            cancel_after_past_due_days: None,
            test_clock_start: Some(start),
        },
        NewKey {
            hash: "chaos-test-key-hash".into(),
            prefix: "chaos".into(),
        },
    )
    .await
    .expect("organization");
    workflows::catalog::create_meter(
        db,
        &clock,
        &org,
        ACTOR,
        MeterSpec {
            code: "api_calls".into(),
            name: "API calls".into(),
            aggregation: Aggregation::Sum,
            unique_property: None,
        },
    )
    .await
    .expect("meter");
    let metered = |model: PriceModel, unit: Option<&str>, tiers: Option<Vec<TierSpec>>| PriceSpec {
        model,
        timing: BillingTiming::InArrears,
        meter_code: Some("api_calls".into()),
        unit_amount: unit.map(dec),
        package_size: None,
        tiers,
        description: Some("API calls".into()),
    };
    let tier = |up_to: Option<&str>, unit: &str| TierSpec {
        up_to: up_to.map(dec),
        unit_amount: dec(unit),
        flat_amount: Decimal::ZERO,
    };
    let specs = [
        plan("starter", 0, vec![flat("29.00", "Starter seat")]),
        plan(
            "pro",
            0,
            vec![
                flat("99.00", "Pro seat"),
                metered(PriceModel::PerUnit, Some("0.002"), None),
            ],
        ),
        plan(
            "scale",
            0,
            vec![metered(
                PriceModel::Graduated,
                None,
                Some(vec![
                    tier(Some("10000"), "0.01"),
                    tier(Some("100000"), "0.005"),
                    tier(None, "0.001"),
                ]),
            )],
        ),
        plan("team", 14, vec![flat("199.00", "Team plan")]),
    ];
    let mut plans = Vec::new();
    for spec in specs {
        let view = workflows::catalog::create_plan(db, &clock, &org, ACTOR, spec)
            .await
            .expect("plan");
        plans.push(view.plan);
    }

    let mut metered_customers = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        let external_id = format!("cust-{i:04}");
        let customer = workflows::customers::create_customer(
            db,
            &clock,
            &org,
            ACTOR,
            CustomerSpec {
                external_id: external_id.clone(),
                name: format!("Customer {i}"),
                email: None,
            },
        )
        .await
        .expect("customer");
        let plan = &plans[i % plans.len()];
        // A third start on January 1st, the rest on a later January day, so
        // period boundaries (and catch-up chains) are spread over the month.
        let start_at = (i % 3 != 0).then(|| start + chrono::Duration::days((i % 19) as i64));
        let billing_anchor = if i % 10 == 3 || i % 10 == 6 {
            BillingAnchor::Calendar
        } else {
            BillingAnchor::Anniversary
        };
        workflows::subscriptions::create_subscription(
            db,
            &clock,
            &org,
            ACTOR,
            NewSubscription {
                customer_id: customer.id.clone(),
                plan_id: plan.id.clone(),
                quantity: 1 + (i % 3) as i32,
                trial_days: None,
                billing_anchor,
                start_at,
                idempotency_key: None,
            },
        )
        .await
        .expect("subscription");
        if plan.code == "pro" || plan.code == "scale" {
            metered_customers.push((i, external_id));
        }
    }

    let org = workflows::test_clock::advance(db, &org.id, ACTOR, at(2026, 1, 20))
        .await
        .expect("advance to January 20 (no worker running)");
    let mut events = Vec::new();
    for (i, customer) in &metered_customers {
        for k in 0..3usize {
            events.push(EventInput {
                idempotency_key: format!("{customer}-jan-{k}"),
                customer_external_id: customer.clone(),
                meter_code: "api_calls".into(),
                value: Decimal::from(((i * 7919 + k * 104_729) % 60_000 + 1) as i64),
                timestamp: at(2026, 1, 2 + ((i + 5 * k) % 17) as u32)
                    + chrono::Duration::minutes((i * 13 + k) as i64 % 1440),
                properties: None,
            });
        }
    }
    let sent = events.len();
    let report = workflows::usage::ingest(db, &clock, &org, ACTOR, events)
        .await
        .expect("usage");
    assert_eq!(report.accepted, sent, "every usage event is accepted");
    org.id
}

/// Subscriptions whose plan has an IN_ADVANCE fee: each must end with
/// exactly one FIRST invoice (`first:{subscription}`), whatever the order the
/// workers ran in. Checked on both runs, not only compared.
async fn missing_first_invoices(db: &DatabaseConnection, org: &str) -> Vec<String> {
    let subscriptions = entity::subscription::Entity::find()
        .filter(entity::subscription::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("subscriptions");
    let plans: HashMap<String, String> = entity::plan::Entity::find()
        .filter(entity::plan::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("plans")
        .into_iter()
        .map(|p| (p.id, p.code))
        .collect();
    let firsts: BTreeSet<String> = invoices_of(db, org)
        .await
        .into_iter()
        .filter(|i| i.billing_key.starts_with("first:"))
        .map(|i| i.billing_key)
        .collect();
    subscriptions
        .into_iter()
        .filter(|s| plans.get(&s.plan_id).is_some_and(|code| code != "scale"))
        .filter(|s| !firsts.contains(&format!("first:{}", s.id)))
        .map(|s| s.id)
        .collect()
}

/// The ledger rows of one subscription's jobs, in the order they finished
/// (worker wall clock): why its FIRST invoice is missing.
async fn jobs_of_subscription(db: &DatabaseConnection, subscription: &str) -> String {
    let mut rows = job_run::Entity::find()
        .filter(job_run::Column::SubjectId.eq(subscription))
        .all(db)
        .await
        .unwrap_or_default();
    rows.sort_by_key(|r| r.finished_at);
    rows.iter()
        .map(|r| {
            format!(
                "\n    {} {} attempts={} finished_at={:?} error={:?}",
                r.job_key, r.state, r.attempts, r.finished_at, r.last_error
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Databases and Redis
// ---------------------------------------------------------------------------

fn database_name(url: &str) -> String {
    let name = &url[url.rfind('/').expect("database name") + 1..];
    name.split('?').next().unwrap_or(name).to_string()
}

fn database_url(name: &str) -> String {
    let admin = pg_admin_url();
    format!("{}/{name}", &admin[..admin.rfind('/').expect("db name")])
}

/// The test Redis, logical database 9: the chaos run's queues live there
/// alone, so flushing it never touches the keys of other tests (logical
/// database 0). `FLUSHDB` on it is `FLUSHALL` for everything the run uses.
fn chaos_redis_url() -> String {
    let base = redis_url();
    let (scheme, rest) = base.split_once("://").expect("redis URL");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}/9")
}

async fn redis_cmd(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await
}

async fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
}

/// `CREATE DATABASE copy TEMPLATE source`; the source must have no session,
/// so whatever is left connected to it is terminated first.
async fn copy_database(source: &str, copy: &str) {
    let admin = Database::connect(pg_admin_url().as_str())
        .await
        .expect("admin connection");
    let mut tries = 0;
    loop {
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{source}' AND pid <> pg_backend_pid()"
            ))
            .await
            .expect("terminate sessions of the source");
        match admin
            .execute_unprepared(&format!("CREATE DATABASE \"{copy}\" TEMPLATE \"{source}\""))
            .await
        {
            Ok(_) => break,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("CREATE DATABASE … TEMPLATE: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("copying {source} to {copy}: {e}"),
        }
    }
    admin.close().await.ok();
}

async fn drop_database(name: &str) {
    if let Ok(admin) = Database::connect(pg_admin_url().as_str()).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
        admin.close().await.ok();
    }
}

/// Drops every connection to database `name`: all the workers' pooled
/// connections at once (a superset of "one worker loses its connection"),
/// plus the test's own polling connections, which reconnect.
async fn drop_connections(name: &str) -> u64 {
    let admin = Database::connect(pg_admin_url().as_str())
        .await
        .expect("admin connection");
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ),
        ))
        .await
        .expect("pg_terminate_backend");
    admin.close().await.ok();
    rows.len() as u64
}

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_millis(500), fetch)
        .await
        .ok()
        .flatten()
}

/// Deliveries that did nothing because the work was already done: the claim
/// CAS refused them (`outcome="duplicate"`: the key was already SUCCEEDED,
/// RUNNING elsewhere or DEAD) or the step found its effect committed by an
/// earlier delivery (`outcome="already_done"`). From one worker's `/metrics`.
fn suppressed_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("valora_jobs_total{"))
        .filter(|line| {
            line.contains("outcome=\"duplicate\"") || line.contains("outcome=\"already_done\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

/// One worker binary.
struct Worker {
    child: Child,
    addr: String,
    /// Last `suppressed_in` scraped from this process (its counters die with it).
    suppressed: u64,
}

impl Worker {
    async fn scrape(&mut self) {
        if let Some(body) = http_get(&self.addr, "/metrics").await {
            self.suppressed = self.suppressed.max(suppressed_in(&body));
        }
    }
}

/// A fleet of worker binaries on one database and Redis; kills what is left
/// of it when dropped (a failing test leaves no worker running).
struct Fleet {
    database_url: String,
    redis_url: String,
    prefix: String,
    dir: std::path::PathBuf,
    workers: Vec<Worker>,
    spawned: usize,
    /// Suppressed duplicates counted by workers that are gone.
    suppressed_gone: u64,
}

impl Fleet {
    fn new(env: &Env, database_url: String, redis_url: String, prefix: String) -> Fleet {
        std::fs::create_dir_all(&env.dir).expect("test directory");
        Fleet {
            database_url,
            redis_url,
            prefix,
            dir: env.dir.clone(),
            workers: Vec::new(),
            spawned: 0,
            suppressed_gone: 0,
        }
    }

    fn spawn(&mut self) -> Worker {
        self.spawned += 1;
        let addr = format!("127.0.0.1:{}", free_port());
        let log = self
            .dir
            .join(format!("{}-worker-{}.log", self.prefix, self.spawned));
        let stdout = std::fs::File::create(&log).expect("log file");
        let stderr = stdout.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("VALORA_QUEUE_PREFIX", &self.prefix)
            .env("VALORA_DATA_DIR", &self.dir)
            .env("VALORA_WORKER_BIND", &addr)
            .env("VALORA_SWEEP_INTERVAL_MS", "1000")
            .env("VALORA_QUEUE_POLL_MS", "50")
            // A killed worker's job comes back when its lease (timeout +
            // margin) expires; a push lost with Redis after requeue_after.
            .env("VALORA_JOB_TIMEOUT_SECS", "10")
            .env("VALORA_LEASE_MARGIN_SECS", "2")
            .env("VALORA_REQUEUE_AFTER_SECS", "5")
            .env("VALORA_RETRY_BASE_MS", "200")
            .env("VALORA_RETRY_CAP_SECS", "5")
            .env("VALORA_SHUTDOWN_SECS", "10")
            .env(
                "RUST_LOG",
                std::env::var("VALORA_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("worker binary starts");
        Worker {
            child,
            addr,
            suppressed: 0,
        }
    }

    fn start(&mut self, n: usize) {
        for _ in 0..n {
            let worker = self.spawn();
            self.workers.push(worker);
        }
    }

    /// SIGKILLs worker `index` (after reading its counters) and starts a new one in its place.
    async fn kill_and_restart(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.scrape().await;
        worker.child.kill().expect("SIGKILL");
        worker.child.wait().expect("reaped");
        self.suppressed_gone += worker.suppressed;
        self.workers[index] = self.spawn();
    }

    /// SIGTERM to every worker (after reading its counters); waits for them to exit.
    async fn stop(&mut self) {
        for worker in &mut self.workers {
            worker.scrape().await;
            let _ = Command::new("kill")
                .args(["-TERM", &worker.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for mut worker in std::mem::take(&mut self.workers) {
            loop {
                match worker.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => {
                        eprintln!("worker {} did not stop on SIGTERM: SIGKILL", worker.addr);
                        let _ = worker.child.kill();
                        let _ = worker.child.wait();
                        break;
                    }
                }
            }
            self.suppressed_gone += worker.suppressed;
        }
    }

    fn suppressed(&self) -> u64 {
        self.suppressed_gone + self.workers.iter().map(|w| w.suppressed).sum::<u64>()
    }

    /// The last lines of every log of this fleet (failure messages).
    fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.spawned {
            let path = self.dir.join(format!("{}-worker-{n}.log", self.prefix));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("--- {} ---\n", path.display()));
            for line in &lines[lines.len().saturating_sub(5)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting for a run to settle
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    ready: bool,
    /// Due domain rows + unfinished due jobs (`pending_for_org`) + unrelayed outbox rows.
    pending: u64,
    succeeded: u64,
}

impl Progress {
    fn settled(&self) -> bool {
        self.ready && self.pending == 0
    }
}

async fn progress(db: &DatabaseConnection, org: &str, to: DateTime<Utc>) -> Option<Progress> {
    let row = organization::Entity::find_by_id(org.to_string())
        .one(db)
        .await
        .ok()??;
    let ready =
        row.test_clock_status == Some(TestClockStatus::Ready) && row.test_clock_time == Some(to);
    let pending = worker::sweeper::pending_for_org(db, org, to).await.ok()?;
    let unrelayed = outbox::Entity::find()
        .filter(outbox::Column::OrganizationId.eq(org))
        .filter(outbox::Column::RelayedAt.is_null())
        .count(db)
        .await
        .ok()?;
    let succeeded = job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(org))
        .filter(job_run::Column::State.eq(JobState::Succeeded))
        .count(db)
        .await
        .ok()?;
    Some(Progress {
        ready,
        pending: pending + unrelayed,
        succeeded,
    })
}

/// Tracks test-clock READY while work is still due (see the report).
#[derive(Default)]
struct ReadyWatch {
    premature: u64,
    first: Option<Progress>,
}

impl ReadyWatch {
    fn observe(&mut self, p: Progress) {
        if p.ready && p.pending > 0 {
            self.premature += 1;
            self.first.get_or_insert(p);
        }
    }
}

/// Waits until `org`'s clock is READY at `to` with nothing due left.
async fn wait_settled(
    db: &DatabaseConnection,
    org: &str,
    to: DateTime<Utc>,
    limit: Duration,
    watch: &mut ReadyWatch,
) -> Option<Progress> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(p) = progress(db, org, to).await {
            watch.observe(p);
            if p.settled() {
                return Some(p);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn job_summary(db: &DatabaseConnection, org: &str) -> String {
    let rows = job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .unwrap_or_default();
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &rows {
        *by.entry((row.kind.clone(), row.state.to_string()))
            .or_default() += 1;
    }
    let mut out = format!("{by:?}\n");
    for row in rows
        .iter()
        .filter(|r| r.state != JobState::Succeeded)
        .take(10)
    {
        out.push_str(&format!(
            "  {} {} attempts={} run_at={} next={:?} error={:?}\n",
            row.job_key, row.state, row.attempts, row.run_at, row.next_attempt_at, row.last_error
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// Comparing the results
// ---------------------------------------------------------------------------

type InvoiceFacts = (Option<String>, i64, String, String);

async fn invoices_of(db: &DatabaseConnection, org: &str) -> Vec<invoice::Model> {
    invoice::Entity::find()
        .filter(invoice::Column::OrganizationId.eq(org))
        .all(db)
        .await
        .expect("invoices")
}

/// billing_key → (content_hash, total_minor, status, kind).
fn facts(invoices: &[invoice::Model]) -> BTreeMap<String, InvoiceFacts> {
    invoices
        .iter()
        .map(|i| {
            (
                i.billing_key.clone(),
                (
                    i.content_hash.clone(),
                    i.total_minor,
                    i.status.to_string(),
                    i.kind.to_string(),
                ),
            )
        })
        .collect()
}

/// Problems with the invoice numbers: per (year), the sequence is 1..=N
/// without gap or repeat, numbers are unique, and every invoice has one.
fn numbering_problems(invoices: &[invoice::Model]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_year: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut numbers = BTreeSet::new();
    for i in invoices {
        match (i.number_year, i.number_seq, &i.number) {
            (Some(year), Some(seq), Some(number)) => {
                by_year.entry(year).or_default().push(seq);
                if !numbers.insert(number.clone()) {
                    problems.push(format!("number {number} used twice"));
                }
            }
            _ => problems.push(format!("{} ({}) has no number", i.billing_key, i.status)),
        }
    }
    for (year, mut seqs) in by_year {
        seqs.sort_unstable();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        if seqs != expected {
            let missing: Vec<i64> = expected
                .iter()
                .filter(|n| seqs.binary_search(n).is_err())
                .copied()
                .take(10)
                .collect();
            problems.push(format!(
                "{year}: {} numbers, not gapless 1..N (first missing: {missing:?}, max {:?})",
                seqs.len(),
                seqs.last()
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_is_exactly_once_under_kills_redis_loss_and_dropped_connections() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    let a_name = database_name(&env.config.database_url);
    let b_name = format!("{a_name}_b");
    let chaos_prefix = format!("{}c", env.config.queue_prefix);
    let baseline_prefix = format!("{}b", env.config.queue_prefix);
    let outcome = AssertUnwindSafe(run(&env, &a_name, &b_name, &baseline_prefix, &chaos_prefix))
        .catch_unwind()
        .await;
    delete_prefix(&chaos_redis_url(), &chaos_prefix).await;
    delete_prefix(&redis_url(), &baseline_prefix).await;
    delete_prefix(&redis_url(), &format!("{baseline_prefix}j")).await;
    drop_database(&b_name).await;
    env.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(env: &Env, a_name: &str, b_name: &str, baseline_prefix: &str, chaos_prefix: &str) {
    let target = at(2026, 4, 1);
    let started = Instant::now();

    // 1. The scenario, once, in A.
    let db = env.connect().await;
    let org = build_scenario(&db).await;
    let a_url = database_url(a_name);
    if std::env::var("VALORA_CHAOS_PRESTART").as_deref() == Ok("1") {
        // Optional: January's due work (starts, trial expiries, FIRST
        // invoices) runs here, undisturbed, before the copy, and the chaos
        // covers only the Feb–Apr catch-up.
        let mut january = Fleet::new(
            env,
            a_url.clone(),
            redis_url(),
            format!("{baseline_prefix}j"),
        );
        january.start(WORKERS);
        let mut watch = ReadyWatch::default();
        let to = at(2026, 1, 20);
        if wait_settled(&db, &org, to, SETTLE_LIMIT, &mut watch)
            .await
            .is_none()
        {
            panic!(
                "January did not settle: {:?}\n{}\n{}",
                progress(&db, &org, to).await,
                job_summary(&db, &org).await,
                january.logs_tail()
            );
        }
        january.stop().await;
    }
    db.close().await.ok();
    eprintln!("chaos: scenario built in {:?}", started.elapsed());

    // 2. B = a copy of A, same ids.
    copy_database(a_name, b_name).await;
    let b_url = database_url(b_name);

    // 3. Baseline on B: three quiet workers catch up to April 1st.
    let db_b = Database::connect(b_url.as_str()).await.expect("connect B");
    workflows::test_clock::advance(&db_b, &org, ACTOR, target)
        .await
        .expect("advance B");
    let mut baseline = Fleet::new(env, b_url.clone(), redis_url(), baseline_prefix.into());
    baseline.start(WORKERS);
    let baseline_started = Instant::now();
    let mut baseline_watch = ReadyWatch::default();
    let settled = wait_settled(&db_b, &org, target, SETTLE_LIMIT, &mut baseline_watch).await;
    if settled.is_none() {
        panic!(
            "baseline (B) did not settle within {SETTLE_LIMIT:?}: {:?}\n{}\n{}",
            progress(&db_b, &org, target).await,
            job_summary(&db_b, &org).await,
            baseline.logs_tail()
        );
    }
    baseline.stop().await;
    let baseline_jobs = job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(org.as_str()))
        .count(&db_b)
        .await
        .expect("baseline jobs");
    eprintln!(
        "chaos: baseline settled in {:?} ({baseline_jobs} jobs)",
        baseline_started.elapsed()
    );

    // 4. Chaos on A: the same advance, while workers die, Redis empties and
    //    connections drop.
    let db_a = Database::connect(a_url.as_str()).await.expect("connect A");
    workflows::test_clock::advance(&db_a, &org, ACTOR, target)
        .await
        .expect("advance A");
    let chaos_redis = chaos_redis_url();
    let mut fleet = Fleet::new(env, a_url.clone(), chaos_redis.clone(), chaos_prefix.into());
    fleet.start(WORKERS);
    let seed: u64 = std::env::var("VALORA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    eprintln!("chaos: seed {seed} (VALORA_CHAOS_SEED reproduces the kill schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let chaos_started = Instant::now();
    let mut watch = ReadyWatch::default();
    let (mut kills, mut flushes, mut connection_drops) = (0u64, 0u64, 0u64);
    let mut settled = false;
    while chaos_started.elapsed() < KILL_PHASE_LIMIT {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..=600))).await;
        let p = progress(&db_a, &org, target).await;
        if let Some(p) = p {
            watch.observe(p);
            if p.settled() {
                settled = true;
                break;
            }
        }
        let done = p.map_or(0, |p| p.succeeded);
        // Redis loss once the run is a quarter through (by the baseline's
        // job count), or after 20 s at the latest: mid-run either way.
        if flushes == 0
            && (done * 4 >= baseline_jobs || chaos_started.elapsed() > Duration::from_secs(20))
        {
            redis_cmd(&chaos_redis, &["FLUSHDB"])
                .await
                .expect("FLUSHDB on the chaos run's Redis database");
            flushes += 1;
            eprintln!(
                "chaos: FLUSHDB at {:?} ({done}/{baseline_jobs} jobs done)",
                chaos_started.elapsed()
            );
        }
        // Every connection of every worker dropped once, half-way through.
        if connection_drops == 0
            && flushes == 1
            && (done * 2 >= baseline_jobs || chaos_started.elapsed() > Duration::from_secs(30))
        {
            let dropped = drop_connections(a_name).await;
            connection_drops += 1;
            eprintln!(
                "chaos: dropped {dropped} database connections at {:?} ({done}/{baseline_jobs} jobs done)",
                chaos_started.elapsed()
            );
        }
        let victim = rng.random_range(0..WORKERS);
        fleet.kill_and_restart(victim).await;
        kills += 1;
    }
    let kill_phase = chaos_started.elapsed();
    if !settled {
        // The survivors (the last restarted workers) finish, undisturbed.
        settled = wait_settled(&db_a, &org, target, SETTLE_LIMIT, &mut watch)
            .await
            .is_some();
    }
    if !settled {
        panic!(
            "chaos run (A) did not settle within {:?}: {:?}\n{}\n{}",
            KILL_PHASE_LIMIT + SETTLE_LIMIT,
            progress(&db_a, &org, target).await,
            job_summary(&db_a, &org).await,
            fleet.logs_tail()
        );
    }
    fleet.stop().await;
    eprintln!(
        "chaos: settled in {:?} (killing for {kill_phase:?})",
        chaos_started.elapsed()
    );
    assert_eq!(flushes, 1, "Redis was flushed mid-run");
    assert_eq!(connection_drops, 1, "connections were dropped mid-run");
    assert!(kills > 0, "workers were killed mid-run");

    // 5. Compare. Fresh connections: the dropped ones are gone for good.
    db_a.close().await.ok();
    let db_a = Database::connect(a_url.as_str()).await.expect("connect A");
    let a_invoices = invoices_of(&db_a, &org).await;
    let b_invoices = invoices_of(&db_b, &org).await;
    let a_facts = facts(&a_invoices);
    let b_facts = facts(&b_invoices);
    let mut mismatches = Vec::new();
    for (key, b) in &b_facts {
        match a_facts.get(key) {
            Some(a) if a == b => {}
            Some(a) => mismatches.push(format!("{key}: chaos {a:?} != baseline {b:?}")),
            None => mismatches.push(format!("{key}: missing in the chaos run (baseline {b:?})")),
        }
    }
    for (key, a) in &a_facts {
        if !b_facts.contains_key(key) {
            mismatches.push(format!("{key}: only in the chaos run {a:?}"));
        }
    }
    // A billing key invoiced twice (possible only without the unique index)
    // collapses in the maps above: count it here.
    for (run, invoices) in [("chaos run", &a_invoices), ("baseline", &b_invoices)] {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for i in invoices.iter() {
            *seen.entry(i.billing_key.as_str()).or_default() += 1;
        }
        for (key, n) in seen.into_iter().filter(|(_, n)| *n > 1) {
            mismatches.push(format!("{key}: invoiced {n} times in the {run}"));
        }
        // Whatever the keys: one period of a subscription is billed by at
        // most one PERIODIC or FINAL invoice (a bug both runs share, which
        // the comparison cannot see, still fails here).
        let mut periods: HashMap<(Option<&str>, Option<String>), usize> = HashMap::new();
        for i in invoices.iter().filter(|i| {
            matches!(
                i.kind,
                entity::InvoiceKind::Periodic | entity::InvoiceKind::Final
            )
        }) {
            let period = (
                i.subscription_id.as_deref(),
                i.period_start.map(|t| t.to_rfc3339()),
            );
            *periods.entry(period).or_default() += 1;
        }
        for (period, n) in periods.into_iter().filter(|(_, n)| *n > 1) {
            mismatches.push(format!("{period:?}: {n} period invoices in the {run}"));
        }
    }
    for m in mismatches.iter().take(20) {
        eprintln!("chaos mismatch: {m}");
    }

    let redeliveries: i64 = job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(org.as_str()))
        .filter(job_run::Column::Attempts.gt(1))
        .all(&db_a)
        .await
        .expect("job runs")
        .iter()
        .map(|r| i64::from(r.attempts - 1))
        .sum();
    let summary = format!(
        "chaos: subscriptions={SUBSCRIPTIONS} kills={kills} flushes={flushes} connection_drops={connection_drops} \
         redeliveries={redeliveries} duplicates_suppressed={} invoices_compared={} mismatches={}",
        fleet.suppressed(),
        b_facts.len(),
        mismatches.len()
    );
    // Straight to the process's stderr: libtest captures println!/eprintln! of
    // passing tests, and this line belongs in the CI log.
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{summary}");
    }
    if watch.premature + baseline_watch.premature > 0 {
        eprintln!(
            "chaos: WARNING test clock READY while work was still due: {} observations in the chaos run (first {:?}), {} in the baseline (first {:?})",
            watch.premature, watch.first, baseline_watch.premature, baseline_watch.first
        );
    }

    assert!(
        !b_facts.is_empty(),
        "the baseline produced invoices (scenario sanity)"
    );
    assert!(
        b_facts.len() >= SUBSCRIPTIONS * 2,
        "about subscriptions × periods invoices: {} for {SUBSCRIPTIONS} subscriptions",
        b_facts.len()
    );
    for (run, db) in [("chaos run", &db_a), ("baseline", &db_b)] {
        let missing = missing_first_invoices(db, &org).await;
        let mut why = String::new();
        for sub in missing.iter().take(3) {
            why.push_str(&format!(
                "\n  {sub}:{}",
                jobs_of_subscription(db, sub).await
            ));
        }
        assert!(
            missing.is_empty(),
            "{run}: {} subscriptions with an IN_ADVANCE fee have no FIRST invoice; their jobs:{why}",
            missing.len()
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} invoices differ between the chaos run and the baseline (first: {:?})",
        mismatches.len(),
        mismatches.first()
    );
    assert_eq!(
        a_invoices.len(),
        b_invoices.len(),
        "invoice count: chaos run vs baseline"
    );
    let a_numbering = numbering_problems(&a_invoices);
    assert!(
        a_numbering.is_empty(),
        "chaos run invoice numbers: {a_numbering:?}"
    );
    let b_numbering = numbering_problems(&b_invoices);
    assert!(
        b_numbering.is_empty(),
        "baseline invoice numbers: {b_numbering:?}"
    );
    let dead: Vec<(String, Option<String>)> = job_run::Entity::find()
        .filter(job_run::Column::State.eq(JobState::Dead))
        .all(&db_a)
        .await
        .expect("dead jobs")
        .into_iter()
        .map(|r| (r.job_key, r.last_error))
        .collect();
    assert!(dead.is_empty(), "DEAD jobs after the chaos run: {dead:?}");
    let chain = workflows::audit::verify(&db_a, &org).await.expect("verify");
    assert!(chain.valid, "chaos run audit chain: {chain:?}");
    let chain = workflows::audit::verify(&db_b, &org).await.expect("verify");
    assert!(chain.valid, "baseline audit chain: {chain:?}");

    db_a.close().await.ok();
    db_b.close().await.ok();
    eprintln!("chaos: total {:?}", started.elapsed());
}
