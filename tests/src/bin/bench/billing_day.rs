//! `bench billing-day`: the 1st of the month for N subscriptions at once.
//!
//! One organization on a test clock at 2026-01-01 holds N monthly
//! subscriptions (a third each of flat 29.00 in advance, hybrid 99.00 in
//! advance + 0.002 per call in arrears, graduated 0.01 / 0.005 / 0.001 per
//! call in arrears), all starting January 1st, with 10 usage events per
//! metered subscription. K worker processes bill the subscription starts;
//! then the clock moves to February 1st and the benchmark measures until
//! every period is closed and every invoice finalized (clock READY, N
//! PERIODIC invoices OPEN).
//!
//! Before printing figures it checks every invoice against an independent
//! set-based SQL computation of the same invoices, which is also the raw
//! baseline: the time that one `INSERT … SELECT` takes to write their
//! totals. A second baseline (PostgreSQL) writes the same invoices with
//! their lines and moves the subscriptions' periods, in one statement: what
//! plain SQL pays for the rows a close writes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeZone, Utc};
use entity::{
    Aggregation, BillingAnchor, BillingTiming, Interval, PriceModel, TestClockStatus, organization,
};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Statement, TransactionTrait};
use tests::{Backend, TestEnv};
use workflows::catalog::{MeterSpec, PlanSpec, PriceSpec, TierSpec};
use workflows::clock::FixedClock;
use workflows::customers::CustomerSpec;
use workflows::subscriptions::NewSubscription;
use workflows::tenancy::{NewKey, NewOrganization};
use workflows::usage::{EventInput, MAX_BATCH};

use crate::report::{self, Latencies};

const ACTOR: &str = "bench";
const EVENTS_PER_SUBSCRIPTION: usize = 10;
/// The plans, in the order subscriptions cycle through them.
const PLANS: [&str; 3] = ["flat", "hybrid", "graduated"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// PostgreSQL + Redis, worker processes.
    Postgres,
    /// SQLite + embedded queue (the zero-setup mode), worker processes on the file.
    Sqlite,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BillingDayArgs {
    /// Subscriptions due on the billing day.
    #[arg(long, default_value_t = 1000)]
    pub subscriptions: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Jobs each worker runs at once (`VALORA_WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Store::Postgres)]
    pub store: Store,
    /// Organizations the subscriptions are spread over (each has its own
    /// audit chain, which serializes that organization's writers).
    #[arg(long, default_value_t = 1)]
    pub organizations: usize,
    /// Diagnostic, NOT a durable setting: `synchronous_commit = off` for the
    /// benchmark's database, to show how much of the time is commit fsyncs.
    #[arg(long)]
    pub no_sync_commit: bool,
    /// Keep the database afterwards (for inspection).
    #[arg(long)]
    pub keep: bool,
    /// PostgreSQL only, for A/B runs: keep the loaded database, with its
    /// subscription starts billed, as a template (`valora_bench_setup_*`),
    /// and start later runs of the same size from a copy of it instead of
    /// loading again. The workers are restarted before the billing day
    /// either way, so both paths measure the same thing. Drop the templates
    /// with `bench drop-setups`.
    #[arg(long)]
    pub reuse_setup: bool,
}

#[derive(clap::Args, Debug)]
pub struct ScalingArgs {
    /// Sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    pub subscriptions: Vec<usize>,
    /// Worker counts on PostgreSQL + Redis, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4])]
    pub workers: Vec<usize>,
    /// Also run the embedded SQLite mode (one worker process) for each size.
    #[arg(long)]
    pub sqlite: bool,
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Organizations, comma-separated (each size × workers runs for each).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    pub organizations: Vec<usize>,
}

/// What one billing day measured.
pub struct Outcome {
    pub args: BillingDayArgs,
    pub setup: Duration,
    pub starts: Duration,
    pub first_invoices: u64,
    pub wall: Duration,
    pub invoices: u64,
    pub total_minor: i64,
    pub close_run: Latencies,
    pub close_done: Latencies,
    pub finalize_done: Latencies,
    pub worker_peak_kib: u64,
    pub database_bytes: u64,
    pub baseline: Duration,
    /// The same invoices, lines and period moves written by one SQL
    /// statement (PostgreSQL only).
    pub same_rows: Option<Duration>,
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

pub async fn run(args: BillingDayArgs) -> anyhow::Result<Outcome> {
    let env = match args.store {
        Store::Postgres => TestEnv::postgres()
            .await
            .context("PostgreSQL + Redis unreachable (VALORA_TEST_PG, VALORA_TEST_REDIS)")?,
        Store::Sqlite => TestEnv::sqlite(),
    };
    let outcome = measure(&env, args.clone()).await;
    if args.keep {
        println!(
            "kept: {} ({})",
            worker::config::redact(&env.config.database_url),
            env.config.data_dir.display()
        );
    } else {
        env.cleanup().await;
    }
    let outcome = outcome?;
    print_outcome(&outcome);
    Ok(outcome)
}

async fn measure(env: &TestEnv, args: BillingDayArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&env.config.data_dir)?;
    let template = match (args.reuse_setup, &env.pg_database) {
        (true, Some(database)) => Some(Template::of(&args, database).await?),
        _ => None,
    };
    if let Some(template) = template.as_ref().filter(|t| t.exists) {
        template.copy().await?;
    }
    if args.no_sync_commit && env.backend == Backend::Postgres {
        let admin = sea_orm::Database::connect(tests::pg_admin_url().as_str()).await?;
        let name = env
            .config
            .database_url
            .rsplit('/')
            .next()
            .unwrap_or_default();
        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
            ))
            .await?;
    }
    let n = args.subscriptions;
    let Prepared {
        db,
        orgs,
        setup,
        starts,
        mut fleet,
    } = prepare(env, &args, template).await?;
    let first_invoices = scalar(
        &db,
        "SELECT COUNT(*) FROM invoices WHERE kind = 'FIRST' AND status = 'OPEN'",
    )
    .await? as u64;
    eprintln!(
        "subscription starts: {first_invoices} FIRST invoices in {}",
        report::seconds(starts)
    );

    // Statistics, as autovacuum keeps them on a live database: tables loaded
    // a moment ago have none, and the planner then walks all of an
    // organization's events for each close batch's usage query.
    db.execute_unprepared("ANALYZE").await?;

    // The billing day.
    let wall_start = Utc::now();
    let started = Instant::now();
    for org in &orgs {
        workflows::test_clock::advance(&db, org, ACTOR, at(2026, 2, 1)).await?;
    }
    wait_ready(
        &db,
        &orgs,
        at(2026, 2, 1),
        &mut fleet,
        Duration::from_secs(3600),
    )
    .await?;
    let wall = started.elapsed();
    let worker_peak_kib = fleet.stop().await;

    let invoices = scalar(
        &db,
        "SELECT COUNT(*) FROM invoices WHERE kind = 'PERIODIC' AND status = 'OPEN'",
    )
    .await? as u64;
    let all_periodic =
        scalar(&db, "SELECT COUNT(*) FROM invoices WHERE kind = 'PERIODIC'").await? as u64;
    if invoices != n as u64 || all_periodic != n as u64 {
        bail!("expected {n} OPEN PERIODIC invoices, found {invoices} OPEN of {all_periodic}");
    }

    let baseline = baseline(&db).await?;
    let (compared, mismatches, valora_sum, baseline_sum) = compare(&db).await?;
    if compared != n as i64 || mismatches != 0 || valora_sum != baseline_sum {
        bail!(
            "invoices disagree with the SQL computation: compared {compared} of {n}, {mismatches} differ, totals {valora_sum} vs {baseline_sum}"
        );
    }
    eprintln!(
        "checked: {compared} invoices equal the SQL computation, total {valora_sum} minor units"
    );
    let same_rows = same_rows_baseline(&db).await?;

    let (close_run, close_done) = job_latencies(&db, "period_close", wall_start).await?;
    let (_, finalize_jobs) = job_latencies(&db, "invoice_finalize", wall_start).await?;
    // With no grace period the close step finalizes its invoice itself:
    // finalized when closed, and there are no finalization jobs.
    let finalize_done = if finalize_jobs.is_empty() {
        close_done.clone()
    } else {
        finalize_jobs
    };
    let database_bytes = database_size(&db, env).await;
    Ok(Outcome {
        args,
        setup,
        starts,
        first_invoices,
        wall,
        invoices,
        total_minor: valora_sum,
        close_run,
        close_done,
        finalize_done,
        worker_peak_kib,
        database_bytes,
        baseline,
        same_rows,
    })
}

/// The database on the eve of the billing day (subscriptions loaded, their
/// starts billed, the clock READY at 2026-01-31) and the fleet that bills it.
struct Prepared {
    db: DatabaseConnection,
    orgs: Vec<String>,
    setup: Duration,
    starts: Duration,
    fleet: Fleet,
}

/// Loads the subscriptions and bills their starts, or, when `template`
/// exists (and was copied), only connects to the copy.
async fn prepare(
    env: &TestEnv,
    args: &BillingDayArgs,
    template: Option<Template>,
) -> anyhow::Result<Prepared> {
    if let Some(template) = template.as_ref().filter(|t| t.exists) {
        eprintln!(
            "setup: copied from template {} (--reuse-setup)",
            template.name
        );
        let db = worker::database::connect(&env.config).await?;
        let orgs = organization::Entity::find()
            .all(&db)
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect();
        return Ok(Prepared {
            db,
            orgs,
            setup: Duration::ZERO,
            starts: Duration::ZERO,
            fleet: Fleet::start(env, args)?,
        });
    }

    let db = worker::database::connect(&env.config).await?;
    worker::database::migrate(&db).await?;
    let n = args.subscriptions;
    let started = Instant::now();
    let orgs = load_subscriptions(&db, n, args.organizations.max(1), args.store).await?;
    let setup = started.elapsed();
    eprintln!(
        "setup: {n} subscriptions and {} usage events in {}",
        metered(n) * EVENTS_PER_SUBSCRIPTION,
        report::seconds(setup)
    );
    let mut fleet = Fleet::start(env, args)?;
    let started = Instant::now();
    wait_ready(
        &db,
        &orgs,
        at(2026, 1, 31),
        &mut fleet,
        Duration::from_secs(3600),
    )
    .await?;
    let starts = started.elapsed();
    let Some(template) = template else {
        return Ok(Prepared {
            db,
            orgs,
            setup,
            starts,
            fleet,
        });
    };
    // A template needs a database nobody is connected to; the billing day
    // then starts with new workers, as a run from the template does.
    fleet.stop().await;
    db.close().await?;
    template.keep().await?;
    eprintln!("setup: kept as template {} (--reuse-setup)", template.name);
    Ok(Prepared {
        db: worker::database::connect(&env.config).await?,
        orgs,
        setup,
        starts,
        fleet: Fleet::start(env, args)?,
    })
}

/// Increase when the setup's data changes, so that old templates are not used.
const SETUP_VERSION: u32 = 1;

/// A setup kept as a template database for `--reuse-setup`.
struct Template {
    /// Its size and organizations, the schema's last migration and
    /// [`SETUP_VERSION`]. It holds what the steps that ran during the setup
    /// wrote: drop the templates (`bench drop-setups`) after changing those.
    name: String,
    /// The run's own database.
    database: String,
    exists: bool,
}

impl Template {
    async fn of(args: &BillingDayArgs, database: &str) -> anyhow::Result<Template> {
        use migration::MigratorTrait;
        let last = migration::Migrator::migrations()
            .last()
            .map(|m| m.name().chars().take(16).collect::<String>())
            .unwrap_or_default();
        let name = format!(
            "{SETUP_PREFIX}{}s_{}o_{last}_v{SETUP_VERSION}",
            args.subscriptions,
            args.organizations.max(1)
        );
        let admin = sea_orm::Database::connect(tests::pg_admin_url().as_str()).await?;
        let exists = admin
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT 1 FROM pg_database WHERE datname = $1",
                [name.clone().into()],
            ))
            .await?
            .is_some();
        admin.close().await?;
        Ok(Template {
            name,
            database: database.to_string(),
            exists,
        })
    }

    /// Replaces the run's (empty) database with a copy of the template.
    async fn copy(&self) -> anyhow::Result<()> {
        let Template { name, database, .. } = self;
        admin_statements(&[
            format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{database}\" TEMPLATE \"{name}\""),
        ])
        .await
    }

    /// Copies the run's database into the template (nobody may be connected).
    async fn keep(&self) -> anyhow::Result<()> {
        let Template { name, database, .. } = self;
        admin_statements(&[format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{database}\""
        )])
        .await
    }
}

async fn admin_statements(statements: &[String]) -> anyhow::Result<()> {
    let admin = sea_orm::Database::connect(tests::pg_admin_url().as_str()).await?;
    for statement in statements {
        admin.execute_unprepared(statement).await?;
    }
    admin.close().await?;
    Ok(())
}

/// Names of setup templates start with this.
const SETUP_PREFIX: &str = "valora_bench_setup_";

/// Drops every setup template `--reuse-setup` left.
pub async fn drop_setups() -> anyhow::Result<()> {
    let admin = sea_orm::Database::connect(tests::pg_admin_url().as_str()).await?;
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{SETUP_PREFIX}%'"),
        ))
        .await?;
    for row in rows {
        let name: String = row.try_get("", "datname")?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        println!("dropped {name}");
    }
    admin.close().await?;
    Ok(())
}

/// Subscriptions on metered plans (hybrid and graduated).
fn metered(n: usize) -> usize {
    (0..n).filter(|i| PLANS[i % PLANS.len()] != "flat").count()
}

/// The organizations, catalogs, customers, subscriptions and January usage;
/// subscription `i` belongs to organization `i % organizations`. Nothing is
/// billed yet: no worker runs during the load.
async fn load_subscriptions(
    db: &DatabaseConnection,
    n: usize,
    organizations: usize,
    store: Store,
) -> anyhow::Result<Vec<String>> {
    let start = at(2026, 1, 1);
    let clock = FixedClock(start);
    let mut orgs = Vec::new();
    for o in 0..organizations {
        let (org, _key) = workflows::tenancy::create_organization(
            db,
            &clock,
            ACTOR,
            NewOrganization {
                name: format!("Bench Co {o}"),
                currency: "USD".into(),
                timezone: "UTC".into(),
                // FIRST invoices stay OPEN (not overdue) through February.
                net_terms_days: 60,
                grace_period_hours: 0,
                late_usage_window_days: 35,
                cancel_after_past_due_days: None,
                test_clock_start: Some(start),
            },
            NewKey {
                hash: format!("bench-key-{}", tests::unique_suffix()),
                prefix: "bench".into(),
            },
        )
        .await?;
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
        .await?;
        let mut plan_ids = Vec::new();
        for code in PLANS {
            let view =
                workflows::catalog::create_plan(db, &clock, &org, ACTOR, plan_spec(code)).await?;
            plan_ids.push(view.plan.id);
        }
        orgs.push((org, plan_ids));
    }

    // Customers and subscriptions, from several connections at once.
    let tasks = match store {
        Store::Postgres => 8,
        Store::Sqlite => 1,
    };
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (db, orgs) = (db.clone(), orgs.clone());
        handles.push(tokio::spawn(async move {
            for i in (task..n).step_by(tasks) {
                let (org, plan_ids) = &orgs[i % orgs.len()];
                let customer = workflows::customers::create_customer(
                    &db,
                    &clock,
                    org,
                    ACTOR,
                    CustomerSpec {
                        external_id: customer_external_id(i),
                        name: format!("Customer {i}"),
                        email: None,
                    },
                )
                .await?;
                workflows::subscriptions::create_subscription(
                    &db,
                    &clock,
                    org,
                    ACTOR,
                    NewSubscription {
                        customer_id: customer.id,
                        plan_id: plan_ids[i % PLANS.len()].clone(),
                        quantity: 1,
                        trial_days: None,
                        billing_anchor: BillingAnchor::Anniversary,
                        start_at: None,
                        idempotency_key: None,
                    },
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }

    // January usage, ingested at the end of January (usage may not run
    // ahead of the organization's clock).
    let clock = FixedClock(at(2026, 1, 31));
    let mut ids = Vec::new();
    for (o, (org, _)) in orgs.iter().enumerate() {
        let org = workflows::test_clock::advance(db, &org.id, ACTOR, at(2026, 1, 31)).await?;
        let mut events = Vec::new();
        for i in (o..n)
            .step_by(organizations)
            .filter(|i| PLANS[i % PLANS.len()] != "flat")
        {
            for k in 0..EVENTS_PER_SUBSCRIPTION {
                events.push(EventInput {
                    idempotency_key: format!("{i}-{k}"),
                    customer_external_id: customer_external_id(i),
                    meter_code: "api_calls".into(),
                    value: Decimal::from(usage_value(i, k)),
                    timestamp: at(2026, 1, 2 + ((i + 3 * k) % 28) as u32),
                    properties: None,
                });
            }
        }
        for batch in events.chunks(MAX_BATCH) {
            let report = workflows::usage::ingest(db, &clock, &org, ACTOR, batch.to_vec()).await?;
            if report.accepted != batch.len() {
                bail!(
                    "{} of {} usage events accepted",
                    report.accepted,
                    batch.len()
                );
            }
        }
        ids.push(org.id);
    }
    Ok(ids)
}

fn customer_external_id(i: usize) -> String {
    format!("cust-{i:07}")
}

/// Calls per event: multiples of 1,000 from 1,000 to 40,000, so that every
/// amount is whole cents and a subscription's month crosses the graduated tiers.
fn usage_value(i: usize, k: usize) -> i64 {
    1000 * (((i * 7 + k * 13) % 40) as i64 + 1)
}

fn plan_spec(code: &str) -> PlanSpec {
    let flat = |amount: &str| PriceSpec {
        model: PriceModel::Flat,
        timing: BillingTiming::InAdvance,
        meter_code: None,
        unit_amount: Some(dec(amount)),
        package_size: None,
        tiers: None,
        description: Some(format!("{code} seat")),
    };
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
    let prices = match code {
        "flat" => vec![flat("29.00")],
        "hybrid" => vec![
            flat("99.00"),
            metered(PriceModel::PerUnit, Some("0.002"), None),
        ],
        _ => vec![metered(
            PriceModel::Graduated,
            None,
            Some(vec![
                tier(Some("10000"), "0.01"),
                tier(Some("100000"), "0.005"),
                tier(None, "0.001"),
            ]),
        )],
    };
    PlanSpec {
        code: code.into(),
        name: code.into(),
        interval: Interval::Month,
        interval_count: 1,
        trial_days: 0,
        prices,
    }
}

/// The same invoices computed by one set-based SQL statement (in cents):
/// flat 2900; hybrid 9900 + calls × 0.2; graduated 1 ¢ up to 10,000 calls,
/// 0.5 ¢ up to 100,000, 0.1 ¢ beyond. Calls are multiples of 1,000, so the
/// integer divisions are exact. Returns how long the statement took.
async fn baseline(db: &DatabaseConnection) -> anyhow::Result<Duration> {
    db.execute_unprepared(
        "CREATE TABLE bench_baseline_invoice (subscription_id TEXT PRIMARY KEY, \
         customer_id TEXT NOT NULL, total_minor BIGINT NOT NULL)",
    )
    .await?;
    let sql = "INSERT INTO bench_baseline_invoice (subscription_id, customer_id, total_minor) \
         SELECT s.id, s.customer_id, CASE p.code \
           WHEN 'flat' THEN 2900 \
           WHEN 'hybrid' THEN 9900 + COALESCE(u.calls, 0) * 2 / 10 \
           ELSE (CASE WHEN COALESCE(u.calls, 0) < 10000 THEN COALESCE(u.calls, 0) ELSE 10000 END) \
              + (CASE WHEN COALESCE(u.calls, 0) <= 10000 THEN 0 \
                      WHEN u.calls < 100000 THEN (u.calls - 10000) * 5 / 10 \
                      ELSE 45000 END) \
              + (CASE WHEN COALESCE(u.calls, 0) <= 100000 THEN 0 ELSE (u.calls - 100000) / 10 END) \
         END \
         FROM subscriptions s JOIN plans p ON p.id = s.plan_id \
         LEFT JOIN (SELECT customer_id, SUM(CAST(value AS BIGINT)) AS calls FROM usage_events \
                    GROUP BY customer_id) u \
           ON u.customer_id = s.customer_id";
    let started = Instant::now();
    db.execute_unprepared(sql).await?;
    Ok(started.elapsed())
}

/// The same invoices *written* by plain SQL, as a second baseline: one
/// statement (PostgreSQL) computes every line, inserts the invoices (with
/// numbers and a content hash) and their lines into copies of `invoices` and
/// `invoice_lines` that carry the same indexes and foreign keys, and moves a
/// copy of `subscriptions` to its next period; timed with its COMMIT. It
/// writes what a close writes except the audit trail, the job ledger and the
/// outbox, which is what the engine adds for durability and auditability.
/// The copies are made, the subscription copy loaded and a `CHECKPOINT`
/// taken before the clock starts. `None` on SQLite (the copies use `CREATE TABLE … LIKE`).
async fn same_rows_baseline(db: &DatabaseConnection) -> anyhow::Result<Option<Duration>> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(None);
    }
    db.execute_unprepared(
        "CREATE TABLE bench_rows_invoices (LIKE invoices INCLUDING ALL); \
         ALTER TABLE bench_rows_invoices \
           ADD FOREIGN KEY (organization_id) REFERENCES organizations (id), \
           ADD FOREIGN KEY (customer_id) REFERENCES customers (id), \
           ADD FOREIGN KEY (subscription_id) REFERENCES subscriptions (id); \
         CREATE TABLE bench_rows_invoice_lines (LIKE invoice_lines INCLUDING ALL); \
         ALTER TABLE bench_rows_invoice_lines \
           ADD FOREIGN KEY (organization_id) REFERENCES organizations (id), \
           ADD FOREIGN KEY (invoice_id) REFERENCES bench_rows_invoices (id), \
           ADD FOREIGN KEY (price_id) REFERENCES prices (id); \
         CREATE TABLE bench_rows_subscriptions (LIKE subscriptions INCLUDING ALL); \
         INSERT INTO bench_rows_subscriptions SELECT * FROM subscriptions; \
         ANALYZE bench_rows_subscriptions",
    )
    .await?;
    // Written out before the clock starts: the billing day just dirtied
    // gigabytes, and the baseline should not pay for writing them.
    db.execute_unprepared("CHECKPOINT").await?;
    // Amounts in cents, as in `baseline`: a fixed price is its unit amount
    // for February, a metered one January's calls through the plan's rule.
    let sql = "WITH usage AS ( \
           SELECT customer_id, SUM(CAST(value AS BIGINT)) AS calls FROM usage_events \
           GROUP BY customer_id), \
         line AS ( \
           SELECT s.id AS subscription_id, s.organization_id, s.customer_id, pr.id AS price_id, \
             pr.position, pr.description, pr.unit_amount, pr.meter_id IS NULL AS fixed, \
             COALESCE(u.calls, 0) AS calls, \
             CASE WHEN pr.meter_id IS NULL THEN CASE p.code WHEN 'flat' THEN 2900 ELSE 9900 END \
                  WHEN p.code = 'hybrid' THEN COALESCE(u.calls, 0) * 2 / 10 \
                  ELSE (CASE WHEN COALESCE(u.calls, 0) < 10000 THEN COALESCE(u.calls, 0) ELSE 10000 END) \
                     + (CASE WHEN COALESCE(u.calls, 0) <= 10000 THEN 0 \
                             WHEN u.calls < 100000 THEN (u.calls - 10000) * 5 / 10 \
                             ELSE 45000 END) \
                     + (CASE WHEN COALESCE(u.calls, 0) <= 100000 THEN 0 ELSE (u.calls - 100000) / 10 END) \
             END AS amount_minor \
           FROM subscriptions s JOIN plans p ON p.id = s.plan_id \
           JOIN plan_versions v ON v.plan_id = s.plan_id \
           JOIN prices pr ON pr.plan_version_id = v.id \
           LEFT JOIN usage u ON u.customer_id = s.customer_id), \
         total AS ( \
           SELECT subscription_id, organization_id, customer_id, SUM(amount_minor) AS total_minor, \
             row_number() OVER (ORDER BY subscription_id) AS seq \
           FROM line GROUP BY subscription_id, organization_id, customer_id), \
         invoice AS ( \
           INSERT INTO bench_rows_invoices (id, organization_id, customer_id, subscription_id, kind, \
             status, currency, billing_key, period_start, period_end, subtotal_minor, total_minor, \
             number, number_year, number_seq, created_at, finalized_at, due_at, content_hash) \
           SELECT 'bi_' || subscription_id, organization_id, customer_id, subscription_id, 'PERIODIC', \
             'OPEN', 'USD', subscription_id || ':1', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', \
             total_minor, total_minor, 'B-2026-' || lpad(seq::text, 7, '0'), 2026, seq, \
             '2026-02-01T00:00:00Z', '2026-02-01T00:00:00Z', '2026-03-03T00:00:00Z', \
             encode(sha256(convert_to(subscription_id || ':' || total_minor, 'UTF8')), 'hex') \
           FROM total RETURNING id, subscription_id), \
         lines AS ( \
           INSERT INTO bench_rows_invoice_lines (id, organization_id, invoice_id, position, kind, \
             description, price_id, quantity, unit_amount, amount_minor, period_start, period_end) \
           SELECT 'bl_' || l.subscription_id || '_' || l.position, l.organization_id, i.id, l.position, \
             CASE WHEN l.fixed THEN 'SUBSCRIPTION' ELSE 'USAGE' END, COALESCE(l.description, ''), \
             l.price_id, CASE WHEN l.fixed THEN '1' ELSE l.calls::text END, l.unit_amount, \
             l.amount_minor, \
             CASE WHEN l.fixed THEN TIMESTAMPTZ '2026-02-01T00:00:00Z' ELSE '2026-01-01T00:00:00Z' END, \
             CASE WHEN l.fixed THEN TIMESTAMPTZ '2026-03-01T00:00:00Z' ELSE '2026-02-01T00:00:00Z' END \
           FROM line l JOIN invoice i ON i.subscription_id = l.subscription_id) \
         UPDATE bench_rows_subscriptions s SET period_index = s.period_index + 1, \
           current_period_start = s.current_period_end, \
           current_period_end = s.current_period_end + INTERVAL '1 month', \
           updated_at = '2026-02-01T00:00:00Z' \
         FROM invoice i WHERE s.id = i.subscription_id";
    let started = Instant::now();
    let txn = db.begin().await?;
    // Foreign-key checks on cached plans, as Valora's own bulk inserts run
    // (the bench's connection plans every statement, like Valora's).
    workflows::txn::with_cached_plans(&txn, async || txn.execute_unprepared(sql).await).await?;
    txn.commit().await?;
    let elapsed = started.elapsed();
    // Its invoices must be the computed ones, and its lines add up to them.
    let wrong = scalar(
        db,
        "SELECT (SELECT COUNT(*) FROM bench_baseline_invoice b \
                 LEFT JOIN bench_rows_invoices r ON r.subscription_id = b.subscription_id \
                 WHERE r.total_minor IS DISTINCT FROM b.total_minor) \
              + (SELECT COUNT(*) FROM bench_rows_invoices r WHERE r.total_minor <> \
                 (SELECT SUM(amount_minor) FROM bench_rows_invoice_lines l WHERE l.invoice_id = r.id))",
    )
    .await?;
    if wrong != 0 {
        bail!("the same-rows baseline wrote {wrong} invoices that differ from the SQL computation");
    }
    Ok(Some(elapsed))
}

/// (compared, mismatching, Valora's sum, the baseline's sum).
async fn compare(db: &DatabaseConnection) -> anyhow::Result<(i64, i64, i64, i64)> {
    let compared = scalar(
        db,
        "SELECT COUNT(*) FROM invoices i JOIN bench_baseline_invoice b ON b.subscription_id = i.subscription_id \
             WHERE i.kind = 'PERIODIC'",
    )
    .await?;
    let mismatches = scalar(
        db,
        "SELECT COUNT(*) FROM invoices i JOIN bench_baseline_invoice b ON b.subscription_id = i.subscription_id \
             WHERE i.kind = 'PERIODIC' \
             AND (i.total_minor <> b.total_minor OR i.customer_id <> b.customer_id)",
    )
    .await?;
    let valora = scalar(
        db,
        "SELECT CAST(COALESCE(SUM(total_minor), 0) AS BIGINT) FROM invoices \
             WHERE kind = 'PERIODIC'",
    )
    .await?;
    let base = scalar(
        db,
        "SELECT CAST(COALESCE(SUM(total_minor), 0) AS BIGINT) FROM bench_baseline_invoice",
    )
    .await?;
    Ok((compared, mismatches, valora, base))
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("a row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Per job of `kind` finished after `since`: run time (started → finished)
/// and time from the billing instant to done (since → finished).
async fn job_latencies(
    db: &DatabaseConnection,
    kind: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<(Latencies, Latencies)> {
    use entity::job_run;
    use sea_orm::{ColumnTrait, QueryFilter};
    let rows = job_run::Entity::find()
        .filter(job_run::Column::Kind.eq(kind))
        .filter(job_run::Column::FinishedAt.gte(since))
        .all(db)
        .await?;
    let span = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).to_std().unwrap_or_default();
    let run = rows
        .iter()
        .filter_map(|r| Some(span(r.started_at?, r.finished_at?)))
        .collect();
    let done = rows
        .iter()
        .filter_map(|r| Some(span(since, r.finished_at?)))
        .collect();
    Ok((Latencies::new(run), Latencies::new(done)))
}

async fn database_size(db: &DatabaseConnection, env: &TestEnv) -> u64 {
    match env.backend {
        Backend::Postgres => scalar(db, "SELECT pg_database_size(current_database())")
            .await
            .map_or(0, |b| b.max(0) as u64),
        Backend::Sqlite => ["valora.db", "valora.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(env.config.data_dir.join(f)).ok())
            .map(|m| m.len())
            .sum(),
    }
}

/// Waits until the organization's clock is READY at `to` (the sweeper turns
/// it READY only when nothing due up to `to` is left), sampling worker memory.
async fn wait_ready(
    db: &DatabaseConnection,
    orgs: &[String],
    to: DateTime<Utc>,
    fleet: &mut Fleet,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        fleet.sample_memory();
        let rows = organization::Entity::find().all(db).await?;
        let ready = rows
            .iter()
            .filter(|row| {
                row.test_clock_status == Some(TestClockStatus::Ready)
                    && row.test_clock_time == Some(to)
            })
            .count();
        if ready == orgs.len() && rows.len() == orgs.len() {
            return Ok(());
        }
        fleet.check_alive()?;
        if Instant::now() > deadline {
            bail!("the clock did not settle at {to} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker binary beside this one (`target/release/worker`).
fn worker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("the bench binary's directory")?
        .join("worker");
    if !path.exists() {
        bail!(
            "{} not found: build it first (`cargo build --release -p worker`, or use scripts/bench)",
            path.display()
        );
    }
    Ok(path)
}

/// Worker processes on the benchmark's database and queue.
struct Fleet {
    children: Vec<Child>,
    peak_kib: Vec<u64>,
}

impl Fleet {
    fn start(env: &TestEnv, args: &BillingDayArgs) -> anyhow::Result<Fleet> {
        let binary = worker_binary()?;
        let mut children = Vec::new();
        for n in 0..args.workers {
            let log = std::fs::File::create(env.config.data_dir.join(format!("worker-{n}.log")))?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut command = Command::new(&binary);
            command
                .env("DATABASE_URL", &env.config.database_url)
                .env("VALORA_QUEUE_PREFIX", &env.config.queue_prefix)
                .env("VALORA_DATA_DIR", &env.config.data_dir)
                .env("VALORA_WORKER_BIND", format!("127.0.0.1:{port}"))
                .env("VALORA_WORKER_CONCURRENCY", args.concurrency.to_string())
                .env(
                    "RUST_LOG",
                    std::env::var("VALORA_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            if env.backend == Backend::Postgres {
                command.env("REDIS_URL", tests::redis_url());
            } else {
                command.env_remove("REDIS_URL");
            }
            children.push(command.spawn().context("starting a worker")?);
        }
        let peak_kib = vec![0; children.len()];
        Ok(Fleet { children, peak_kib })
    }

    fn sample_memory(&mut self) {
        for (child, peak) in self.children.iter().zip(self.peak_kib.iter_mut()) {
            if let Some(kib) = report::proc_status_kib(child.id(), "VmHWM") {
                *peak = (*peak).max(kib);
            }
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("a worker exited during the benchmark: {status}");
            }
        }
        Ok(())
    }

    /// SIGTERM to all, waits; returns the largest peak RSS of one worker (KiB).
    async fn stop(&mut self) -> u64 {
        self.sample_memory();
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.peak_kib.iter().copied().max().unwrap_or(0)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn store_name(args: &BillingDayArgs) -> String {
    let store = match args.store {
        Store::Postgres => "PostgreSQL + Redis",
        Store::Sqlite => "SQLite embedded",
    };
    let diagnostic = if args.no_sync_commit {
        ", synchronous_commit=off"
    } else {
        ""
    };
    format!(
        "{store}, {} worker(s), {} org(s){diagnostic}",
        args.workers, args.organizations
    )
}

fn row(o: &Outcome) -> Vec<String> {
    vec![
        o.args.subscriptions.to_string(),
        store_name(&o.args),
        report::seconds(o.wall),
        report::per_second(o.invoices, o.wall).to_string(),
        report::millis(o.close_run.percentile(50)),
        report::millis(o.close_run.percentile(99)),
        report::seconds(o.finalize_done.percentile(50)),
        report::seconds(o.finalize_done.percentile(99)),
        report::mib(o.worker_peak_kib),
        report::mib(o.database_bytes / 1024),
        report::seconds(o.baseline),
        report::ratio(o.wall, o.baseline),
        o.same_rows.map_or("–".into(), report::seconds),
        o.same_rows
            .map_or("–".into(), |rows| report::ratio(o.wall, rows)),
    ]
}

const HEADERS: [&str; 14] = [
    "subscriptions",
    "mode",
    "billing day",
    "invoices/s",
    "close run p50",
    "close run p99",
    "finalized p50",
    "finalized p99",
    "worker peak RSS",
    "database",
    "SQL baseline",
    "Valora/baseline",
    "same-rows baseline",
    "Valora/same rows",
];

fn print_outcome(o: &Outcome) {
    println!(
        "\nbilling day: {} subscriptions, {}, {} jobs at once per worker",
        o.args.subscriptions,
        store_name(&o.args),
        o.args.concurrency
    );
    println!(
        "  load {} · subscription starts {} ({} FIRST invoices)",
        report::seconds(o.setup),
        report::seconds(o.starts),
        o.first_invoices
    );
    println!(
        "  period_close: run time {} · closed after the billing instant {}",
        o.close_run.summary(),
        o.close_done.summary()
    );
    println!(
        "  finalized (by invoice_finalize jobs, or by the close itself when there are none) after the billing instant {}",
        o.finalize_done.summary()
    );
    println!("\n{}", report::table(&HEADERS, &[row(o)]));
    println!(
        "bench billing-day: subscriptions={} organizations={} workers={} store={:?} wall={} invoices={} invoices_per_s={} total_minor={} baseline={} ratio={} same_rows_baseline={} ratio_same_rows={} worker_peak={}",
        o.args.subscriptions,
        o.args.organizations,
        o.args.workers,
        o.args.store,
        report::seconds(o.wall),
        o.invoices,
        report::per_second(o.invoices, o.wall),
        o.total_minor,
        report::seconds(o.baseline),
        report::ratio(o.wall, o.baseline),
        o.same_rows.map_or("–".into(), report::seconds),
        o.same_rows
            .map_or("–".into(), |rows| report::ratio(o.wall, rows)),
        report::mib(o.worker_peak_kib)
    );
}

/// billing-day for every size × worker count (and SQLite), one table.
pub async fn scaling(args: ScalingArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &subscriptions in &args.subscriptions {
        let mut runs = Vec::new();
        for &organizations in &args.organizations {
            for &workers in &args.workers {
                runs.push(BillingDayArgs {
                    subscriptions,
                    workers,
                    concurrency: args.concurrency,
                    store: Store::Postgres,
                    organizations,
                    no_sync_commit: false,
                    keep: false,
                    reuse_setup: false,
                });
            }
        }
        if args.sqlite {
            runs.push(BillingDayArgs {
                subscriptions,
                workers: 1,
                concurrency: args.concurrency,
                store: Store::Sqlite,
                organizations: 1,
                no_sync_commit: false,
                keep: false,
                reuse_setup: false,
            });
        }
        for run_args in runs {
            let outcome = run(run_args).await?;
            rows.push(row(&outcome));
        }
    }
    println!("\nscaling\n\n{}", report::table(&HEADERS, &rows));
    Ok(())
}
