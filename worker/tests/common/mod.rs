//! A small harness for the job-machinery tests (the `tests` crate depends on
//! `worker`, so `worker`'s own tests cannot use it): each test environment
//! gets its own database and its own queue prefix.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{InvoiceKind, InvoiceStatus, JobState, customer, invoice, job_run, organization};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, Set, TransactionTrait,
};
use worker::{Config, QueueBackend};
use workflows::clock::Clock;
use workflows::jobs::Job;
use workflows::steps::{Step, StepError, StepFuture, StepOutcome, mark_succeeded};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Env {
    pub backend: Backend,
    pub config: Config,
    pg_database: Option<String>,
    pub dir: PathBuf,
}

fn suffix() -> String {
    workflows::ids::new_id()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

pub fn pg_admin_url() -> String {
    std::env::var("VALORA_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("VALORA_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `VALORA_REQUIRE_SERVERS=1`: an unreachable server fails the test instead
/// of skipping it (CI).
pub fn servers_required() -> bool {
    matches!(
        std::env::var("VALORA_REQUIRE_SERVERS").as_deref(),
        Ok("1") | Ok("true")
    )
}

/// Fast settings so tests do not wait on production intervals.
fn tune(config: &mut Config) {
    worker::telemetry::init_logging(worker::LogFormat::Text);
    config.jobs.poll_interval = Duration::from_millis(50);
    config.jobs.sweep_interval = Duration::from_millis(100);
    config.jobs.retry_base = Duration::from_millis(200);
    config.jobs.retry_cap = Duration::from_secs(5);
    config.jobs.shutdown_deadline = Duration::from_secs(10);
}

impl Env {
    pub fn sqlite() -> Env {
        let dir = std::env::temp_dir().join(format!("valora-jobs-{}", suffix()));
        let data_dir = dir.display().to_string();
        let mut config = Config::from_lookup(|name| match name {
            "VALORA_DATA_DIR" => Some(data_dir.clone()),
            _ => None,
        })
        .expect("config");
        tune(&mut config);
        Env {
            backend: Backend::Sqlite,
            config,
            pg_database: None,
            dir,
        }
    }

    pub async fn postgres() -> Option<Env> {
        let name = format!("valora_t_{}", suffix());
        let created = async {
            let admin = Database::connect(pg_admin_url().as_str()).await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await?;
            admin.close().await
        }
        .await;
        let redis = worker::queue_health::ping(&QueueBackend::Redis { url: redis_url() }).await;
        if created.is_err() || redis.is_err() {
            let why = format!("{:?} / {:?}", created.err(), redis.err());
            if servers_required() {
                panic!("PostgreSQL + Redis required: {why}");
            }
            eprintln!("skipped PostgreSQL + Redis variant: {why}");
            return None;
        }
        let admin = pg_admin_url();
        let base = &admin[..admin.rfind('/').expect("db name")];
        let database_url = format!("{base}/{name}");
        let dir = std::env::temp_dir().join(format!("valora-jobs-{}", suffix()));
        let data_dir = dir.display().to_string();
        let prefix = format!("tj{}", suffix());
        let mut config = Config::from_lookup(|var| match var {
            "DATABASE_URL" => Some(database_url.clone()),
            "REDIS_URL" => Some(redis_url()),
            "VALORA_QUEUE_PREFIX" => Some(prefix.clone()),
            "VALORA_DATA_DIR" => Some(data_dir.clone()),
            _ => None,
        })
        .expect("config");
        tune(&mut config);
        Some(Env {
            backend: Backend::Postgres,
            config,
            pg_database: Some(name),
            dir,
        })
    }

    pub async fn all() -> Vec<Env> {
        let mut envs = vec![Env::sqlite()];
        envs.extend(Env::postgres().await);
        envs
    }

    pub async fn connect(&self) -> DatabaseConnection {
        let db = worker::database::connect(&self.config)
            .await
            .expect("connect");
        worker::database::migrate(&db).await.expect("migrate");
        db
    }

    /// Loses every queued message of this environment: the Redis keys under
    /// its prefix, or the apalis-sqlite rows of its queues.
    pub async fn lose_queues(&self, db: &DatabaseConnection) {
        match &self.config.queue {
            QueueBackend::Redis { url } => {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let pattern = format!("{}:*", self.config.queue_prefix);
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    let _: () = redis::cmd("DEL")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
            QueueBackend::Embedded => {
                db.execute_unprepared("DELETE FROM Jobs").await.unwrap();
            }
        }
    }

    pub async fn cleanup(self) {
        if let QueueBackend::Redis { url } = &self.config.queue
            && let Ok(client) = redis::Client::open(url.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let pattern = format!("{}:*", self.config.queue_prefix);
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
        }
        if let Some(name) = &self.pg_database
            && let Ok(admin) = Database::connect(pg_admin_url().as_str()).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn create_org(db: &DatabaseConnection, test_clock: Option<DateTime<Utc>>) -> String {
    let id = workflows::ids::new_id();
    organization::ActiveModel {
        id: Set(id.clone()),
        name: Set("Test org".into()),
        currency: Set("USD".into()),
        timezone: Set("UTC".into()),
        net_terms_days: Set(30),
        grace_period_hours: Set(0),
        late_usage_window_days: Set(35),
        cancel_after_past_due_days: Set(None),
        invoice_prefix: Set("INV".into()),
        test_clock_time: Set(test_clock),
        test_clock_status: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .expect("org");
    id
}

pub async fn create_customer(db: &DatabaseConnection, org: &str) -> String {
    let id = workflows::ids::new_id();
    customer::ActiveModel {
        id: Set(id.clone()),
        organization_id: Set(org.into()),
        external_id: Set(format!("ext-{id}")),
        name: Set("Customer".into()),
        email: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .expect("customer");
    id
}

/// A DRAFT invoice due for finalization at `finalize_at`.
pub async fn create_draft(
    db: &DatabaseConnection,
    org: &str,
    customer: &str,
    finalize_at: DateTime<Utc>,
) -> String {
    let id = workflows::ids::new_id();
    invoice::ActiveModel {
        id: Set(id.clone()),
        organization_id: Set(org.into()),
        customer_id: Set(customer.into()),
        subscription_id: Set(None),
        kind: Set(InvoiceKind::Periodic),
        status: Set(InvoiceStatus::Draft),
        currency: Set("USD".into()),
        billing_key: Set(format!("test:{id}")),
        period_start: Set(None),
        period_end: Set(None),
        subtotal_minor: Set(0),
        total_minor: Set(0),
        number: Set(None),
        number_year: Set(None),
        number_seq: Set(None),
        finalize_at: Set(Some(finalize_at)),
        created_at: Set(Utc::now()),
        finalized_at: Set(None),
        due_at: Set(None),
        paid_at: Set(None),
        voided_at: Set(None),
        content_hash: Set(None),
    }
    .insert(db)
    .await
    .expect("invoice");
    id
}

/// A DRAFT invoice with one 10.00 line, due for finalization at `finalize_at`:
/// something the production finalize step can really finalize.
pub async fn create_billable_draft(
    db: &DatabaseConnection,
    org: &str,
    finalize_at: DateTime<Utc>,
) -> String {
    let customer = create_customer(db, org).await;
    let id = create_draft(db, org, &customer, finalize_at).await;
    entity::invoice_line::ActiveModel {
        id: Set(workflows::ids::new_id()),
        organization_id: Set(org.into()),
        invoice_id: Set(id.clone()),
        position: Set(0),
        kind: Set(entity::InvoiceLineKind::Subscription),
        description: Set("Test fee".into()),
        price_id: Set(None),
        quantity: Set(entity::Dec::ONE),
        unit_amount: Set(None),
        amount_minor: Set(1000),
        period_start: Set(finalize_at - chrono::Duration::days(30)),
        period_end: Set(finalize_at),
    }
    .insert(db)
    .await
    .expect("invoice line");
    id
}

pub async fn job_row(db: &DatabaseConnection, key: &str) -> Option<job_run::Model> {
    job_run::Entity::find()
        .filter(job_run::Column::JobKey.eq(key))
        .one(db)
        .await
        .expect("job row")
}

/// Waits until `key` is in `state` (or panics after `secs`).
pub async fn wait_state(
    db: &DatabaseConnection,
    key: &str,
    state: JobState,
    secs: u64,
) -> job_run::Model {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(row) = job_row(db, key).await
            && row.state == state
        {
            return row;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{key} never reached {state:?}: {:?}",
                job_row(db, key).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A step whose effect is counted: it increments `effects` only when its
/// transaction (which marks the job SUCCEEDED) commits. It can be slow, and
/// can fail its first `fail_first` attempts.
#[derive(Clone, Default)]
pub struct CountingStep {
    pub effects: Arc<AtomicUsize>,
    /// Commits under way: a test that saw a job SUCCEEDED may look before
    /// the commit that made it so has been counted.
    pub committing: Arc<AtomicUsize>,
    pub attempts: Arc<AtomicUsize>,
    pub delay: Duration,
    pub fail_first: usize,
    /// Panics (instead of returning an error) on this attempt.
    pub panic_on: Option<usize>,
}

impl CountingStep {
    /// Effects committed, once no commit is still being counted.
    pub fn effects(&self) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.committing.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.effects.load(Ordering::SeqCst)
    }
}

impl Step for CountingStep {
    fn run<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        clock: &'a dyn Clock,
        job: &'a Job,
    ) -> StepFuture<'a> {
        Box::pin(async move {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.panic_on == Some(attempt) {
                panic!("planned panic {attempt}");
            }
            if attempt <= self.fail_first {
                return Err(StepError::Transient(format!("planned failure {attempt}")));
            }
            let txn = db.begin().await?;
            if mark_succeeded(&txn, &job.key, clock.now()).await? {
                self.committing.fetch_add(1, Ordering::SeqCst);
                let committed = txn.commit().await;
                if committed.is_ok() {
                    self.effects.fetch_add(1, Ordering::SeqCst);
                }
                self.committing.fetch_sub(1, Ordering::SeqCst);
                committed?;
                Ok(StepOutcome::Done)
            } else {
                txn.rollback().await?;
                Ok(StepOutcome::AlreadyDone)
            }
        })
    }
}
