//! `bench ingest`: usage events per second through the real HTTP GraphQL
//! `ingestUsage`, beside the same rows written by plain SQL in the same run.
//!
//! The API runs in this process (PostgreSQL + Redis, no embedded workers) on
//! a fresh database; one organization on a test clock, one SUM meter and
//! `--customers` customers. Two measured phases of `--events` events each,
//! sent in batches of `--batch` by `--clients` concurrent HTTP clients, with
//! every request body built before the clock starts:
//!
//! 1. every idempotency key new;
//! 2. `--duplicates` percent of the events resend an event of phase 1
//!    verbatim (DUPLICATE per the spec), spread evenly over the batches, the
//!    rest carry new keys.
//!
//! Every response's per-event outcomes must be exactly what was sent (no
//! REJECTED, the expected ACCEPTED and DUPLICATE counts) and `usage_events`
//! must hold one row per unique key, or the run fails before printing
//! figures. The baselines then write phase 1's rows, read back from
//! `usage_events`, into scratch copies of the table (same columns, indexes,
//! unique and foreign keys): multi-row INSERTs over `--clients` connections,
//! and `COPY` through `psql \copy` in `--clients` processes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value as DbValue};
use serde_json::{Value, json};

use crate::report::{self, Latencies};

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Events sent in each of the two phases.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Events per `ingestUsage` request (at most 10,000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent HTTP clients (and baseline connections).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Percent of the second phase's events that resend an event of the first.
    #[arg(long, default_value_t = 20)]
    pub duplicates: u32,
    /// Customers the events are spread over.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Rows per statement of the multi-row INSERT baseline.
    #[arg(long, default_value_t = 1000)]
    pub baseline_rows: usize,
    /// Skip the COPY baseline (it needs `psql` on the PATH).
    #[arg(long)]
    pub no_copy: bool,
    /// Diagnostic: `plan_cache_mode = force_custom_plan` on the benchmark
    /// database before the API connects, so PostgreSQL plans every prepared
    /// statement with its actual parameters instead of reusing a generic
    /// plan made while `usage_events` was still empty. Off by default: the
    /// figures without it are what Valora does as shipped.
    #[arg(long)]
    pub force_custom_plans: bool,
}

const METER: &str = "api_calls";
/// The organization's frozen clock; events fall in the day before it.
const CLOCK: &str = "2026-01-16T00:00:00Z";
const REGIONS: [&str; 4] = ["eu-west", "us-east", "ap-south", "sa-east"];
const INGEST: &str = "mutation Ingest($events: [UsageEventInput!]!) { ingestUsage(events: $events) \
     { accepted duplicates rejected results { outcome code message } } }";
const COLUMNS: &str = "id, organization_id, customer_id, meter_id, idempotency_key, value, \
     \"timestamp\", properties, payload_hash, created_at";

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    ensure!(args.events > 0, "--events must be at least 1");
    ensure!(
        (1..=10_000).contains(&args.batch),
        "--batch must be 1 to 10,000 (the API's batch limit)"
    );
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(
        args.duplicates <= 100,
        "--duplicates is a percentage (0–100)"
    );
    ensure!(args.customers > 0, "--customers must be at least 1");
    ensure!(
        (1..=6_000).contains(&args.baseline_rows),
        "--baseline-rows must be 1 to 6,000 (PostgreSQL's 65,535 bind parameters)"
    );
    progress(format_args!("starting"));
    let env = ::tests::TestEnv::postgres()
        .await
        .context("bench ingest needs PostgreSQL and Redis (VALORA_TEST_PG, VALORA_TEST_REDIS)")?;
    let result = bench(&env, &args).await;
    env.cleanup().await;
    result
}

/// One request to send and what its answer must say.
struct Batch {
    body: Vec<u8>,
    events: usize,
    accepted: usize,
    duplicates: usize,
}

/// The requests of one phase.
struct Plan {
    batches: Vec<Batch>,
    events: usize,
    accepted: usize,
    duplicates: usize,
}

/// What one measured run did.
struct Measured {
    events: usize,
    accepted: usize,
    duplicates: usize,
    wall: Duration,
    latencies: Latencies,
    rss_before_kib: u64,
    rss_peak_kib: u64,
}

async fn bench(env: &::tests::TestEnv, args: &IngestArgs) -> anyhow::Result<()> {
    let mut config = env.config.clone();
    config.embedded_workers = false;
    let admin_token = config
        .admin_token
        .clone()
        .context("the test environment sets an admin token")?;
    if args.force_custom_plans {
        let db = worker::database::connect_url(&config.database_url, 1).await?;
        db.execute_unprepared(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan', \
             current_database()); END $$",
        )
        .await?;
        db.close().await?;
    }
    let server = api::server::start(config.clone())
        .await
        .context("the API starts")?;
    let measured = measure(&server, &config.database_url, &admin_token, args).await;
    server.stop().await.context("the API stops")?;
    let (setup, valora_unique, valora_dup, insert, copy) = measured?;
    print_report(
        args,
        &setup,
        &valora_unique,
        &valora_dup,
        &insert,
        copy.as_ref(),
    );
    Ok(())
}

/// Facts about the machine and database, printed above the table.
struct Setup {
    machine: Vec<String>,
    customers_setup: Duration,
}

type Figures = (Setup, Measured, Measured, Measured, Option<Measured>);

async fn measure(
    server: &api::server::RunningServer,
    database_url: &str,
    admin_token: &str,
    args: &IngestArgs,
) -> anyhow::Result<Figures> {
    let db = &server.db;
    let url = format!("http://{}/graphql", server.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients.max(8))
        .timeout(Duration::from_secs(600))
        .build()?;

    // Bootstrap: organization on a test clock, an INGEST key, meter, customers.
    let created = graphql(
        &http,
        &url,
        admin_token,
        "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) {
            organization { id } apiKey } }",
        json!({"input": {"name": "Bench ingest", "currency": "USD", "testClockStart": CLOCK}}),
    )
    .await?;
    let org_id = str_at(&created, &["createOrganization", "organization", "id"])?;
    let admin_key = str_at(&created, &["createOrganization", "apiKey"])?;
    let key = graphql(
        &http,
        &url,
        &admin_key,
        "mutation { createApiKey(role: INGEST) { apiKey } }",
        json!({}),
    )
    .await?;
    let ingest_key = str_at(&key, &["createApiKey", "apiKey"])?;
    graphql(
        &http,
        &url,
        &admin_key,
        "mutation($input: CreateMeterInput!) { createMeter(input: $input) { id } }",
        json!({"input": {"code": METER, "name": "API calls", "aggregation": "SUM"}}),
    )
    .await?;
    let started = Instant::now();
    progress(format_args!("creating {} customers", args.customers));
    create_customers(&http, &url, &admin_key, args).await?;
    let customers_setup = started.elapsed();

    // Every request body of both phases, before any clock starts.
    progress(format_args!("building the request bodies"));
    let (unique_plan, dup_plan) = plans(args)?;
    let unique_keys = unique_plan.accepted + dup_plan.accepted;
    let machine = machine_facts(db).await;

    checkpoint(db).await;
    progress(format_args!("phase 1: unique keys"));
    let valora_unique = drive(&http, &url, &ingest_key, unique_plan, args.clients).await?;
    checkpoint(db).await;
    progress(format_args!("phase 2: {}% duplicates", args.duplicates));
    let valora_dup = drive(&http, &url, &ingest_key, dup_plan, args.clients).await?;

    let stored = count(
        db,
        "SELECT COUNT(*) AS n FROM usage_events WHERE organization_id = $1",
        vec![org_id.clone().into()],
    )
    .await?;
    ensure!(
        stored == unique_keys as i64,
        "usage_events holds {stored} rows for the organization, but {unique_keys} unique keys were sent"
    );

    // Baselines: phase 1's rows as Valora stored them.
    progress(format_args!("baselines"));
    let rows = read_back(db, &org_id).await?;
    ensure!(
        rows.len() == args.events,
        "read back {} rows of phase 1, expected {}",
        rows.len(),
        args.events
    );
    let insert = insert_baseline(db, database_url, &rows, args).await?;
    let copy = if args.no_copy {
        None
    } else {
        Some(copy_baseline(db, database_url, &rows, args).await?)
    };
    progress(format_args!("baselines done"));
    Ok((
        Setup {
            machine,
            customers_setup,
        },
        valora_unique,
        valora_dup,
        insert,
        copy,
    ))
}

/// Runs a GraphQL operation; the `data` of a successful answer.
async fn graphql(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let answer: Value = http
        .post(url)
        .bearer_auth(bearer)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await?
        .json()
        .await?;
    if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
        bail!("GraphQL errors: {errors}");
    }
    Ok(answer["data"].clone())
}

fn str_at(value: &Value, path: &[&str]) -> anyhow::Result<String> {
    path.iter()
        .fold(value, |v, p| &v[*p])
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no string at {} in {value}", path.join(".")))
}

fn customer_external_id(i: usize) -> String {
    format!("cust-{i:06}")
}

async fn create_customers(
    http: &reqwest::Client,
    url: &str,
    admin_key: &str,
    args: &IngestArgs,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (http, url, key, next) = (
            http.clone(),
            url.to_string(),
            admin_key.to_string(),
            next.clone(),
        );
        let total = args.customers;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let external_id = customer_external_id(i);
                graphql(
                    &http,
                    &url,
                    &key,
                    "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
                    json!({"input": {"externalId": external_id, "name": format!("Customer {i}")}}),
                )
                .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The `i`-th distinct event payload (its key is given).
fn event(key: &str, i: usize, customers: usize, start: DateTime<Utc>) -> Value {
    // A value in cents, as an exact decimal string: 0.00 to 999.99.
    let cents = (i * 7919) % 100_000;
    let timestamp = start + chrono::Duration::seconds((i % 86_400) as i64);
    json!({
        "idempotencyKey": key,
        "customerExternalId": customer_external_id(i % customers),
        "meterCode": METER,
        "value": format!("{}.{:02}", cents / 100, cents % 100),
        "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::Secs, true),
        "properties": {"region": REGIONS[i % REGIONS.len()]},
    })
}

fn body(events: Vec<Value>) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(
        &json!({"query": INGEST, "operationName": "Ingest", "variables": {"events": events}}),
    )?)
}

/// Both phases' requests: all-new keys, then `duplicates` percent resent.
fn plans(args: &IngestArgs) -> anyhow::Result<(Plan, Plan)> {
    let clock: DateTime<Utc> = CLOCK.parse()?;
    let start = clock - chrono::Duration::days(1);
    let n = args.events;
    let first = |i: usize| event(&format!("a-{i:09}"), i, args.customers, start);

    let mut unique = Plan {
        batches: Vec::new(),
        events: n,
        accepted: n,
        duplicates: 0,
    };
    for lo in (0..n).step_by(args.batch) {
        let hi = (lo + args.batch).min(n);
        unique.batches.push(Batch {
            body: body((lo..hi).map(first).collect())?,
            events: hi - lo,
            accepted: hi - lo,
            duplicates: 0,
        });
    }

    let mut mixed = Plan {
        batches: Vec::new(),
        events: n,
        accepted: 0,
        duplicates: 0,
    };
    // The k-th duplicate resends phase 1's k-th event: distinct, already stored.
    let mut resent = 0;
    for lo in (0..n).step_by(args.batch) {
        let hi = (lo + args.batch).min(n);
        let mut events = Vec::with_capacity(hi - lo);
        let (mut accepted, mut duplicates) = (0, 0);
        for j in lo..hi {
            if (j % 100) < args.duplicates as usize {
                events.push(first(resent));
                resent += 1;
                duplicates += 1;
            } else {
                events.push(event(&format!("b-{j:09}"), n + j, args.customers, start));
                accepted += 1;
            }
        }
        mixed.accepted += accepted;
        mixed.duplicates += duplicates;
        mixed.batches.push(Batch {
            body: body(events)?,
            events: hi - lo,
            accepted,
            duplicates,
        });
    }
    Ok((unique, mixed))
}

/// A progress line on stderr (the report goes to stdout), with the time
/// since the process started.
fn progress(what: std::fmt::Arguments<'_>) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let since = START.get_or_init(Instant::now).elapsed();
    eprintln!("[bench ingest +{}] {what}", report::seconds(since));
}

/// Resets this process's peak RSS to its current RSS (Linux `clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_now_kib() -> u64 {
    report::proc_status_kib(std::process::id(), "VmRSS").unwrap_or(0)
}

/// Sends a phase's requests with `clients` concurrent clients and checks
/// every answer.
async fn drive(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    plan: Plan,
    clients: usize,
) -> anyhow::Result<Measured> {
    let Plan {
        batches,
        events,
        accepted,
        duplicates,
    } = plan;
    let queue = Arc::new(Mutex::new(VecDeque::from(batches)));
    reset_peak_rss();
    let rss_before_kib = rss_now_kib();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, key, queue) = (
            http.clone(),
            url.to_string(),
            key.to_string(),
            queue.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut accepted, mut duplicates) = (0, 0);
            loop {
                let Some(batch) = queue.lock().expect("queue lock").pop_front() else {
                    return anyhow::Ok((latencies, accepted, duplicates));
                };
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(batch.body)
                    .send()
                    .await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                latencies.push(sent.elapsed());
                let (a, d) = check_answer(status, &bytes, batch.events)?;
                ensure!(
                    (a, d) == (batch.accepted, batch.duplicates),
                    "a batch of {} events came back with {a} ACCEPTED and {d} DUPLICATE, \
                     expected {} and {}",
                    batch.events,
                    batch.accepted,
                    batch.duplicates
                );
                accepted += a;
                duplicates += d;
            }
        }));
    }
    let mut samples = Vec::new();
    let (mut got_accepted, mut got_duplicates) = (0, 0);
    for task in tasks {
        let (latencies, a, d) = task.await??;
        samples.extend(latencies);
        got_accepted += a;
        got_duplicates += d;
    }
    let wall = started.elapsed();
    let rss_peak_kib = report::own_peak_rss_kib().max(rss_before_kib);
    ensure!(
        (got_accepted, got_duplicates) == (accepted, duplicates),
        "the phase came back with {got_accepted} ACCEPTED and {got_duplicates} DUPLICATE, \
         expected {accepted} and {duplicates}"
    );
    Ok(Measured {
        events,
        accepted,
        duplicates,
        wall,
        latencies: Latencies::new(samples),
        rss_before_kib,
        rss_peak_kib,
    })
}

/// Counts an `ingestUsage` answer's per-event outcomes; any error or
/// REJECTED event fails the run.
fn check_answer(
    status: reqwest::StatusCode,
    bytes: &[u8],
    events: usize,
) -> anyhow::Result<(usize, usize)> {
    let answer: Value = serde_json::from_slice(bytes).with_context(|| {
        format!(
            "HTTP {status}: not JSON: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )
    })?;
    if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
        bail!("ingestUsage failed (HTTP {status}): {errors}");
    }
    let payload = &answer["data"]["ingestUsage"];
    let results = payload["results"]
        .as_array()
        .with_context(|| format!("no results in {payload}"))?;
    ensure!(
        results.len() == events,
        "{} results for {events} events",
        results.len()
    );
    let (mut accepted, mut duplicates) = (0, 0);
    for result in results {
        match result["outcome"].as_str() {
            Some("ACCEPTED") => accepted += 1,
            Some("DUPLICATE") => duplicates += 1,
            _ => bail!("an event was not stored: {result}"),
        }
    }
    ensure!(
        payload["accepted"].as_u64() == Some(accepted as u64)
            && payload["duplicates"].as_u64() == Some(duplicates as u64)
            && payload["rejected"].as_u64() == Some(0),
        "the counts {payload:.200} disagree with the per-event outcomes"
    );
    Ok((accepted, duplicates))
}

async fn count(db: &DatabaseConnection, sql: &str, values: Vec<DbValue>) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?
        .context("COUNT returns a row")?;
    Ok(row.try_get::<i64>("", "n")?)
}

/// A checkpoint before each measured run, so one run's dirty pages are not
/// written during the next (best effort).
async fn checkpoint(db: &DatabaseConnection) {
    let _ = db.execute_unprepared("CHECKPOINT").await;
}

/// One stored usage event, as the baselines write it.
struct Row {
    id: String,
    organization_id: String,
    customer_id: String,
    meter_id: String,
    idempotency_key: String,
    value: String,
    timestamp: DateTime<Utc>,
    properties: Option<Value>,
    payload_hash: String,
    created_at: DateTime<Utc>,
}

/// Phase 1's rows, in the order they were sent.
async fn read_back(db: &DatabaseConnection, org_id: &str) -> anyhow::Result<Vec<Row>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT {COLUMNS} FROM usage_events WHERE organization_id = $1 \
                 AND idempotency_key LIKE 'a-%' ORDER BY idempotency_key"
            ),
            [org_id.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Row {
                id: r.try_get("", "id")?,
                organization_id: r.try_get("", "organization_id")?,
                customer_id: r.try_get("", "customer_id")?,
                meter_id: r.try_get("", "meter_id")?,
                idempotency_key: r.try_get("", "idempotency_key")?,
                value: r.try_get("", "value")?,
                timestamp: r.try_get("", "timestamp")?,
                properties: r.try_get("", "properties")?,
                payload_hash: r.try_get("", "payload_hash")?,
                created_at: r.try_get("", "created_at")?,
            })
        })
        .collect()
}

/// A scratch copy of `usage_events`: same columns, indexes, unique and
/// foreign keys (`LIKE … INCLUDING ALL` leaves foreign keys out).
async fn scratch_table(db: &DatabaseConnection, name: &str) -> anyhow::Result<()> {
    db.execute_unprepared(&format!(
        "CREATE TABLE {name} (LIKE usage_events INCLUDING ALL);
         ALTER TABLE {name}
           ADD FOREIGN KEY (organization_id) REFERENCES organizations (id),
           ADD FOREIGN KEY (customer_id) REFERENCES customers (id),
           ADD FOREIGN KEY (meter_id) REFERENCES meters (id);"
    ))
    .await?;
    Ok(())
}

/// Multi-row INSERTs of `--baseline-rows` rows, prepared and bound, one
/// autocommitted statement each, over `--clients` connections. The
/// connections keep PostgreSQL's default `plan_cache_mode`: Valora's own
/// `force_custom_plan` would make the foreign-key checks plan every row.
async fn insert_baseline(
    db: &DatabaseConnection,
    database_url: &str,
    rows: &[Row],
    args: &IngestArgs,
) -> anyhow::Result<Measured> {
    const TABLE: &str = "bench_usage_baseline";
    scratch_table(db, TABLE).await?;
    let mut statements = VecDeque::new();
    for chunk in rows.chunks(args.baseline_rows) {
        let mut sql = format!("INSERT INTO {TABLE} ({COLUMNS}) VALUES ");
        let mut values: Vec<DbValue> = Vec::with_capacity(chunk.len() * 10);
        for (r, row) in chunk.iter().enumerate() {
            let p = r * 10;
            if r > 0 {
                sql.push(',');
            }
            write!(
                sql,
                "(${},${},${},${},${},${},${},${},${},${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8,
                p + 9,
                p + 10
            )?;
            values.extend([
                row.id.clone().into(),
                row.organization_id.clone().into(),
                row.customer_id.clone().into(),
                row.meter_id.clone().into(),
                row.idempotency_key.clone().into(),
                row.value.clone().into(),
                row.timestamp.into(),
                DbValue::Json(row.properties.clone().map(Box::new)),
                row.payload_hash.clone().into(),
                row.created_at.into(),
            ]);
        }
        statements.push_back((
            chunk.len(),
            Statement::from_sql_and_values(DbBackend::Postgres, sql, values),
        ));
    }
    let mut connections = Vec::new();
    for _ in 0..args.clients {
        let connection = worker::database::connect_url(database_url, 1).await?;
        connection
            .execute_unprepared("SET plan_cache_mode = auto")
            .await?;
        connections.push(connection);
    }
    checkpoint(db).await;
    let queue = Arc::new(Mutex::new(statements));
    reset_peak_rss();
    let rss_before_kib = rss_now_kib();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in connections {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut written = 0;
            loop {
                let Some((n, statement)) = queue.lock().expect("queue lock").pop_front() else {
                    connection.close().await?;
                    return anyhow::Ok((latencies, written));
                };
                let sent = Instant::now();
                let result = connection.execute_raw(statement).await?;
                latencies.push(sent.elapsed());
                ensure!(
                    result.rows_affected() == n as u64,
                    "an INSERT wrote too few rows"
                );
                written += n;
            }
        }));
    }
    let mut samples = Vec::new();
    let mut written = 0;
    for task in tasks {
        let (latencies, n) = task.await??;
        samples.extend(latencies);
        written += n;
    }
    let wall = started.elapsed();
    let rss_peak_kib = report::own_peak_rss_kib();
    let stored = count(db, &format!("SELECT COUNT(*) AS n FROM {TABLE}"), vec![]).await?;
    ensure!(
        written == rows.len() && stored == rows.len() as i64,
        "the INSERT baseline stored {stored} rows of {}",
        rows.len()
    );
    Ok(Measured {
        events: rows.len(),
        accepted: rows.len(),
        duplicates: 0,
        wall,
        latencies: Latencies::new(samples),
        rss_before_kib,
        rss_peak_kib,
    })
}

/// One CSV field, quoted when it has to be.
fn csv_field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) || text.is_empty() {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn csv_line(out: &mut String, row: &Row) {
    for field in [
        &row.id,
        &row.organization_id,
        &row.customer_id,
        &row.meter_id,
        &row.idempotency_key,
        &row.value,
    ] {
        csv_field(out, field);
        out.push(',');
    }
    out.push_str(&row.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    out.push(',');
    // An unquoted empty field is NULL in CSV COPY.
    if let Some(properties) = &row.properties {
        csv_field(out, &properties.to_string());
    }
    out.push(',');
    csv_field(out, &row.payload_hash);
    out.push(',');
    out.push_str(&row.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    out.push('\n');
}

/// `psql \copy … FROM` CSV files, one slice of the rows per process, with
/// `--clients` processes at once (the time includes starting psql).
async fn copy_baseline(
    db: &DatabaseConnection,
    database_url: &str,
    rows: &[Row],
    args: &IngestArgs,
) -> anyhow::Result<Measured> {
    const TABLE: &str = "bench_usage_baseline_copy";
    scratch_table(db, TABLE).await?;
    let dir =
        std::env::temp_dir().join(format!("valora-bench-ingest-{}", ::tests::unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    let result = copy_from_files(db, database_url, rows, args, &dir, TABLE).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn copy_from_files(
    db: &DatabaseConnection,
    database_url: &str,
    rows: &[Row],
    args: &IngestArgs,
    dir: &Path,
    table: &str,
) -> anyhow::Result<Measured> {
    let per_file = rows.len().div_ceil(args.clients);
    let mut files: Vec<PathBuf> = Vec::new();
    for (f, chunk) in rows.chunks(per_file).enumerate() {
        let mut text = String::with_capacity(chunk.len() * 256);
        for row in chunk {
            csv_line(&mut text, row);
        }
        let path = dir.join(format!("rows-{f}.csv"));
        std::fs::write(&path, text)?;
        files.push(path);
    }
    let commands: Vec<std::process::Command> = files
        .iter()
        .map(|path| {
            let mut command = std::process::Command::new("psql");
            command
                .arg(database_url)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!(
                    "\\copy {table} ({COLUMNS}) FROM '{}' WITH (FORMAT csv)",
                    path.display()
                ))
                .stdout(std::process::Stdio::null());
            command
        })
        .collect();
    checkpoint(db).await;
    reset_peak_rss();
    let rss_before_kib = rss_now_kib();
    let (wall, samples) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut children = Vec::new();
        for mut command in commands {
            children.push((
                Instant::now(),
                command
                    .spawn()
                    .context("psql runs (install it or pass --no-copy)")?,
            ));
        }
        let mut samples = Vec::new();
        for (spawned, mut child) in children {
            let status = child.wait()?;
            ensure!(status.success(), "psql \\copy failed: {status}");
            samples.push(spawned.elapsed());
        }
        anyhow::Ok((started.elapsed(), samples))
    })
    .await??;
    let rss_peak_kib = report::own_peak_rss_kib();
    let stored = count(db, &format!("SELECT COUNT(*) AS n FROM {table}"), vec![]).await?;
    ensure!(
        stored == rows.len() as i64,
        "the COPY baseline stored {stored} rows of {}",
        rows.len()
    );
    Ok(Measured {
        events: rows.len(),
        accepted: rows.len(),
        duplicates: 0,
        wall,
        latencies: Latencies::new(samples),
        rss_before_kib,
        rss_peak_kib,
    })
}

/// CPU, memory, build and PostgreSQL settings.
async fn machine_facts(db: &DatabaseConnection) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or("unknown".to_string(), report::mib);
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "max_connections",
        "plan_cache_mode",
    ] {
        let value = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT current_setting('{name}') AS v"),
            ))
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<String>("", "v").ok())
            .unwrap_or_else(|| "?".into());
        settings.push(format!("{name}={value}"));
    }
    let build = if cfg!(debug_assertions) {
        "debug (figures not meaningful)"
    } else {
        "release"
    };
    vec![
        format!("machine: {cores} cores ({model}), {memory} RAM"),
        format!("build: {build}"),
        format!("PostgreSQL: {}", settings.join(", ")),
        "API: in this process (same runtime as the HTTP clients), PostgreSQL + Redis, no embedded workers; API DB pool of 20".into(),
    ]
}

fn print_report(
    args: &IngestArgs,
    setup: &Setup,
    unique: &Measured,
    dup: &Measured,
    insert: &Measured,
    copy: Option<&Measured>,
) {
    let pct = args.duplicates;
    println!();
    println!("## bench ingest");
    println!();
    for line in &setup.machine {
        println!("- {line}");
    }
    println!(
        "- parameters: --events {} per phase, --batch {}, --clients {}, --duplicates {pct}%, \
         --customers {}, --baseline-rows {}{}; one SUM meter; each event has a decimal value, \
         a timestamp in the last day of a test clock and a one-key properties object",
        args.events,
        args.batch,
        args.clients,
        args.customers,
        args.baseline_rows,
        if args.force_custom_plans {
            ", --force-custom-plans (diagnostic: not Valora as shipped)"
        } else {
            ""
        }
    );
    println!(
        "- setup: {} customers created through the API in {}",
        args.customers,
        report::seconds(setup.customers_setup)
    );
    println!(
        "- checked: every answer's per-event outcomes (no REJECTED; ACCEPTED/DUPLICATE exactly as sent); \
         usage_events holds {} rows = unique keys sent; each baseline table holds {} rows",
        unique.accepted + dup.accepted,
        insert.events
    );
    println!();

    let ratio_to = |m: &Measured, base: &Measured| {
        // Same number of events in every run: the time ratio is the throughput ratio.
        if m.events == base.events {
            report::ratio(m.wall, base.wall)
        } else {
            "–".into()
        }
    };
    let mut headers = vec![
        "run",
        "events",
        "accepted / duplicate",
        "wall time",
        "events/s",
        "p50",
        "p99",
        "max",
        "ratio vs INSERT baseline",
    ];
    if copy.is_some() {
        headers.push("ratio vs COPY baseline");
    }
    let line = |name: String, m: &Measured, latency: bool| {
        let mut row = vec![
            name,
            m.events.to_string(),
            format!("{} / {}", m.accepted, m.duplicates),
            report::seconds(m.wall),
            report::per_second(m.events as u64, m.wall).to_string(),
        ];
        if latency && !m.latencies.is_empty() {
            row.push(report::millis(m.latencies.percentile(50)));
            row.push(report::millis(m.latencies.percentile(99)));
            row.push(report::millis(m.latencies.percentile(100)));
        } else {
            row.extend(["–".into(), "–".into(), "–".into()]);
        }
        row.push(ratio_to(m, insert));
        if let Some(copy) = copy {
            row.push(ratio_to(m, copy));
        }
        row
    };
    let mut rows = vec![
        line("Valora ingestUsage (unique)".into(), unique, true),
        line(format!("Valora ingestUsage ({pct}% duplicates)"), dup, true),
        line(
            format!(
                "baseline multi-row INSERT ({} rows/statement)",
                args.baseline_rows
            ),
            insert,
            true,
        ),
    ];
    if let Some(copy) = copy {
        rows.push(line("baseline COPY (psql \\copy)".into(), copy, false));
    }
    print!("{}", report::table(&headers, &rows));
    println!();
    println!(
        "p50/p99/max: per ingestUsage request of up to {} events (HTTP round trip; {} + {} requests); \
         for the INSERT baseline per statement of up to {} rows ({} statements). \
         Ratio: wall time / baseline wall time for the same number of events.",
        args.batch,
        unique.latencies.len(),
        dup.latencies.len(),
        args.baseline_rows,
        insert.latencies.len()
    );
    for (name, m) in [("unique", unique), ("duplicates", dup)] {
        println!(
            "API process RSS ({name}): before {}, peak {} (includes the in-process clients and their pre-built bodies)",
            report::mib(m.rss_before_kib),
            report::mib(m.rss_peak_kib)
        );
    }
    println!();
    let mut summary = format!(
        "bench ingest: events={} batch={} clients={} unique={} ev/s (p50 {}, p99 {}) \
         dup{pct}%={} ev/s (p50 {}, p99 {}) insert_baseline={} rows/s ratio={}",
        args.events,
        args.batch,
        args.clients,
        report::per_second(unique.events as u64, unique.wall),
        report::millis(unique.latencies.percentile(50)),
        report::millis(unique.latencies.percentile(99)),
        report::per_second(dup.events as u64, dup.wall),
        report::millis(dup.latencies.percentile(50)),
        report::millis(dup.latencies.percentile(99)),
        report::per_second(insert.events as u64, insert.wall),
        ratio_to(unique, insert),
    );
    if let Some(copy) = copy {
        let _ = write!(
            summary,
            " copy_baseline={} rows/s ratio_copy={}",
            report::per_second(copy.events as u64, copy.wall),
            ratio_to(unique, copy)
        );
    }
    let _ = write!(
        summary,
        " api_rss_peak={}",
        report::mib(unique.rss_peak_kib.max(dup.rss_peak_kib))
    );
    if args.force_custom_plans {
        summary.push_str(" (diagnostic: --force-custom-plans)");
    }
    println!("{summary}");
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut out = String::new();
        csv_field(&mut out, "plain");
        out.push(',');
        csv_field(&mut out, r#"{"a":"b,c"}"#);
        assert_eq!(out, r#"plain,"{""a"":""b,c""}""#);
    }

    #[test]
    fn the_second_phase_resends_the_asked_share() {
        let args = IngestArgs {
            events: 1000,
            batch: 300,
            clients: 2,
            duplicates: 20,
            customers: 7,
            baseline_rows: 100,
            no_copy: true,
            force_custom_plans: false,
        };
        let (unique, mixed) = plans(&args).unwrap();
        assert_eq!((unique.accepted, unique.duplicates), (1000, 0));
        assert_eq!((mixed.accepted, mixed.duplicates), (800, 200));
        assert_eq!(unique.batches.len(), 4);
        assert_eq!(mixed.batches.iter().map(|b| b.events).sum::<usize>(), 1000);
    }
}
