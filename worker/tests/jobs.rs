//! The job machinery end to end, on SQLite + embedded queue and on
//! PostgreSQL + Redis: dedup by key, outbox relay, retries to DEAD and back,
//! Redis loss (and a backlog that is not mistaken for it), and several
//! sweepers on one database.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{Duration as Days, Utc};
use common::{CountingStep, Env, create_customer, create_draft, create_org, job_row, wait_state};
use entity::{JobState, job_run, outbox};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use worker::pool::{PoolOptions, WorkerPool, start_with};
use workflows::clock::SystemClock;
use workflows::jobs::{Job, JobKind, record_in_outbox};
use workflows::steps::StepRegistry;

async fn pool(env: &Env, db: &sea_orm::DatabaseConnection, step: &CountingStep) -> WorkerPool {
    pool_with(env, db, step, PoolOptions::default()).await
}

async fn pool_with(
    env: &Env,
    db: &sea_orm::DatabaseConnection,
    step: &CountingStep,
    mut options: PoolOptions,
) -> WorkerPool {
    let mut steps = StepRegistry::new();
    for kind in JobKind::ALL {
        steps = steps.with(kind, step.clone());
    }
    options.steps = steps;
    start_with(&env.config, db.clone(), Arc::new(SystemClock), options)
        .await
        .expect("pool starts")
}

/// A pool that only enqueues: no queue workers, relay or sweeper (tests
/// drive those themselves).
async fn only_pushing(
    env: &Env,
    db: &sea_orm::DatabaseConnection,
    step: &CountingStep,
) -> WorkerPool {
    let options = PoolOptions {
        workers: false,
        relay: false,
        sweeper: Some(false),
        ..Default::default()
    };
    pool_with(env, db, step, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_enqueued_ten_times_concurrently_runs_once() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep {
            delay: Duration::from_millis(100),
            ..Default::default()
        };
        let pool = pool(&env, &db, &step).await;
        let rt = pool.runtime().clone();
        let job = Job::invoice_finalize(&org, "inv-dedup", Utc::now() - Days::seconds(1));
        let mut tasks = vec![];
        for _ in 0..10 {
            let rt = rt.clone();
            let job = job.clone();
            tasks.push(tokio::spawn(async move {
                rt.enqueue(&job, Utc::now(), "test").await.expect("enqueue")
            }));
        }
        let mut new = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), worker::runtime::Enqueued::New { .. }) {
                new += 1;
            }
        }
        assert_eq!(
            new, 1,
            "{:?}: one enqueue inserts the ledger row",
            env.backend
        );
        // Duplicate deliveries on top: push the same message 10 more times.
        for _ in 0..10 {
            rt.queues.push(&job).await.expect("push");
        }
        let row = wait_state(&db, &job.key, JobState::Succeeded, 20).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            step.effects(),
            1,
            "{:?}: the effect happens once",
            env.backend
        );
        assert_eq!(row.attempts, 1, "{:?}", env.backend);
        let rows = job_run::Entity::find()
            .filter(job_run::Column::JobKey.eq(job.key.as_str()))
            .count(&db)
            .await
            .unwrap();
        assert_eq!(rows, 1);
        assert!(
            rt.stats.duplicates.load(Ordering::Relaxed) >= 1,
            "duplicates were acked"
        );
        pool.shutdown().await.expect("shutdown");
        db.close().await.ok();
        env.cleanup().await;
    }
}

async fn wait_relayed(db: &sea_orm::DatabaseConnection, backend: common::Backend) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let unrelayed = outbox::Entity::find()
            .filter(outbox::Column::RelayedAt.is_null())
            .count(db)
            .await
            .unwrap();
        if unrelayed == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backend:?}: {unrelayed} outbox rows never marked relayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_rows_are_relayed_run_and_marked() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let now = Utc::now();
        let jobs: Vec<Job> = (0..5)
            .map(|i| Job::invoice_finalize(&org, &format!("inv-relay-{i}"), now - Days::seconds(1)))
            .collect();
        for job in &jobs {
            record_in_outbox(&db, job, now).await.unwrap();
        }
        // A job not due yet: relayed into the ledger, not run.
        let later = Job::invoice_overdue(&org, "inv-later", now + Days::days(3));
        record_in_outbox(&db, &later, now).await.unwrap();

        let step = CountingStep::default();
        let pool = pool(&env, &db, &step).await;
        for job in &jobs {
            wait_state(&db, &job.key, JobState::Succeeded, 20).await;
        }
        // The relay marks its batch after enqueueing it: jobs may finish first.
        wait_relayed(&db, env.backend).await;
        let later_row = job_row(&db, &later.key).await.expect("ledger row");
        assert_eq!(later_row.state, JobState::Queued);
        assert_eq!(
            later_row.next_attempt_at, None,
            "not pushed before it is due"
        );
        assert_eq!(step.effects(), 5);

        // Relay crash simulation: the push happened, the mark did not.
        let crashed = Job::invoice_finalize(&org, "inv-crash", now - Days::seconds(1));
        record_in_outbox(&db, &crashed, now).await.unwrap();
        pool.shutdown().await.unwrap();
        let pushing_only = PoolOptions {
            workers: false,
            relay: false,
            sweeper: Some(false),
            ..Default::default()
        };
        let pusher = pool_with(&env, &db, &step, pushing_only).await;
        pusher
            .runtime()
            .enqueue(&crashed, Utc::now(), "relay")
            .await
            .unwrap();
        pusher.shutdown().await.unwrap();
        // And rows already done are relayed again from scratch.
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::RelayedAt,
                sea_orm::sea_query::Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .exec(&db)
            .await
            .unwrap();
        let pool = pool_with(&env, &db, &step, PoolOptions::default()).await;
        wait_state(&db, &crashed.key, JobState::Succeeded, 20).await;
        wait_relayed(&db, env.backend).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            step.effects(),
            6,
            "{:?}: re-relaying ran nothing twice",
            env.backend
        );
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_jobs_back_off_die_and_revive() {
    for mut env in Env::all().await {
        env.config.jobs.max_attempts = 4;
        env.config.jobs.retry_base = Duration::from_millis(300);
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep {
            fail_first: 4,
            panic_on: Some(2),
            ..Default::default()
        };
        let pool = pool(&env, &db, &step).await;
        let job = Job::invoice_finalize(&org, "inv-fail", Utc::now() - Days::seconds(1));
        pool.runtime()
            .enqueue(&job, Utc::now(), "test")
            .await
            .unwrap();

        // Record the delay chosen after each failed attempt.
        let mut gaps = vec![];
        let mut seen = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = job_row(&db, &job.key).await.unwrap();
            if row.state == JobState::Failed && row.attempts > seen {
                seen = row.attempts;
                if seen == 2 {
                    let error = row.last_error.clone().unwrap_or_default();
                    assert!(error.contains("step panicked: planned panic 2"), "{error}");
                }
                let gap = row.next_attempt_at.unwrap() - row.updated_at;
                gaps.push(gap);
            }
            if row.state == JobState::Dead {
                assert_eq!(row.attempts, 4, "{:?}", env.backend);
                assert!(
                    row.last_error
                        .as_deref()
                        .unwrap_or("")
                        .contains("planned failure 4"),
                    "{:?}",
                    row.last_error
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}: job dies: {row:?}",
                env.backend
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            gaps.len(),
            3,
            "{:?}: three retries before DEAD: {gaps:?}",
            env.backend
        );
        for pair in gaps.windows(2) {
            assert!(
                pair[1] >= pair[0],
                "{:?}: delays grow: {gaps:?}",
                env.backend
            );
        }
        assert!(gaps[2] > gaps[0], "{gaps:?}");
        assert_eq!(step.effects(), 0);

        // The operator retries it: attempts reset, the fifth run succeeds.
        let row = job_row(&db, &job.key).await.unwrap();
        let revived = worker::ops::retry_job(&db, Some(&org), &row.id, chrono::Utc::now())
            .await
            .expect("retry");
        assert_eq!((revived.state, revived.attempts), (JobState::Queued, 0));
        let done = wait_state(&db, &job.key, JobState::Succeeded, 20).await;
        assert_eq!(done.attempts, 1);
        assert_eq!(step.effects(), 1);
        // Discarding a finished job is refused; listing shows it.
        assert!(
            worker::ops::discard_job(&db, None, &row.id, Utc::now())
                .await
                .is_err()
        );
        let page = worker::ops::list_jobs(
            &db,
            Some(&org),
            Some(JobKind::InvoiceFinalize),
            None,
            10,
            None,
        )
        .await
        .unwrap();
        assert_eq!(page.jobs.len(), 1);
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_queues_loses_no_work() {
    for mut env in Env::all().await {
        env.config.jobs.requeue_after = Duration::from_secs(1);
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep::default();
        // Jobs queued while no worker runs…
        let pusher = only_pushing(&env, &db, &step).await;
        let jobs: Vec<Job> = (0..8)
            .map(|i| {
                Job::invoice_finalize(
                    &org,
                    &format!("inv-loss-{i}"),
                    Utc::now() - Days::seconds(1),
                )
            })
            .collect();
        for job in &jobs {
            pusher
                .runtime()
                .enqueue(job, Utc::now(), "test")
                .await
                .unwrap();
        }
        pusher.shutdown().await.unwrap();
        // …then every message is lost (FLUSHALL-equivalent for this test's keys).
        env.lose_queues(&db).await;
        let pool = pool(&env, &db, &step).await;
        for job in &jobs {
            wait_state(&db, &job.key, JobState::Succeeded, 30).await;
        }
        assert_eq!(step.effects(), 8, "{:?}", env.backend);
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_behind_a_backlog_are_not_pushed_again_until_the_queue_is_lost() {
    for mut env in Env::all().await {
        env.config.jobs.requeue_after = Duration::from_secs(1);
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep::default();
        let pusher = only_pushing(&env, &db, &step).await;
        let jobs: Vec<Job> = (0..8)
            .map(|i| Job::invoice_finalize(&org, &format!("inv-backlog-{i}"), Utc::now()))
            .collect();
        for job in &jobs {
            pusher
                .runtime()
                .enqueue(job, Utc::now(), "test")
                .await
                .unwrap();
        }
        pusher.shutdown().await.unwrap();
        // No worker consumes: the messages wait, and stay older than
        // requeue_after while a sweeper ticks every 100 ms.
        let sweeper = pool_with(
            &env,
            &db,
            &step,
            PoolOptions {
                workers: false,
                relay: false,
                sweeper: Some(true),
                ..Default::default()
            },
        )
        .await;
        let runtime = sweeper.runtime().clone();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let waiting = runtime
            .queues
            .waiting(&db, JobKind::InvoiceFinalize)
            .await
            .unwrap();
        assert_eq!(waiting, 8, "{:?}: the pushed messages wait", env.backend);
        assert_eq!(
            runtime.stats.pushes.load(Ordering::Relaxed),
            0,
            "{:?}: a job behind waiting messages is late, not lost",
            env.backend
        );
        // The queue is lost: now the same rows are pushed again, once each.
        env.lose_queues(&db).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let repushed = runtime.stats.pushes.load(Ordering::Relaxed);
        let waiting = runtime
            .queues
            .waiting(&db, JobKind::InvoiceFinalize)
            .await
            .unwrap();
        sweeper.shutdown().await.unwrap();
        assert_eq!(
            repushed, 8,
            "{:?}: lost pushes are pushed again",
            env.backend
        );
        assert_eq!(waiting, 8, "{:?}", env.backend);
        assert_eq!(step.effects(), 0, "{:?}: nothing ran", env.backend);
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweepers_enqueue_each_due_key_once() {
    for mut env in Env::all().await {
        env.config.jobs.sweep_batch = 10;
        let db = env.connect().await;
        let now = Utc::now();
        let org = create_org(&db, None).await;
        let customer = create_customer(&db, &org).await;
        for i in 0..25 {
            create_draft(&db, &org, &customer, now - Days::minutes(i)).await;
        }
        // Not due yet on the process clock.
        create_draft(&db, &org, &customer, now + Days::days(1)).await;
        // Due by its organization's test clock (frozen a month ahead).
        let frozen = create_org(&db, Some(now + Days::days(30))).await;
        let frozen_customer = create_customer(&db, &frozen).await;
        create_draft(&db, &frozen, &frozen_customer, now + Days::days(2)).await;

        let step = CountingStep::default();
        let sweep_only = PoolOptions {
            workers: false,
            relay: false,
            sweeper: Some(true),
            ..Default::default()
        };
        let a = pool_with(&env, &db, &step, sweep_only.clone()).await;
        let b = pool_with(&env, &db, &step, sweep_only).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pushes = a.runtime().stats.pushes.load(Ordering::Relaxed)
            + b.runtime().stats.pushes.load(Ordering::Relaxed);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        let rows = job_run::Entity::find()
            .filter(job_run::Column::Kind.eq("invoice_finalize"))
            .count(&db)
            .await
            .unwrap();
        assert_eq!(rows, 26, "{:?}: 25 due + 1 test-clock due", env.backend);
        // The frozen organization's due work: its draft and its queued job.
        let pending = worker::sweeper::pending_for_org(&db, &frozen, now + Days::days(30))
            .await
            .unwrap();
        assert_eq!(pending, 2, "{:?}", env.backend);
        assert_eq!(
            pushes, 26,
            "{:?}: each key pushed once across both sweepers",
            env.backend
        );
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_running_job_is_recovered_after_its_lease() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep::default();
        let pusher = only_pushing(&env, &db, &step).await;
        let job = Job::invoice_finalize(&org, "inv-killed", Utc::now() - Days::seconds(1));
        pusher
            .runtime()
            .enqueue(&job, Utc::now(), "test")
            .await
            .unwrap();
        pusher.shutdown().await.unwrap();
        // A worker claims it and is SIGKILLed: RUNNING, lease 500 ms, message gone.
        let now = Utc::now();
        let claimed = worker::job_runs::claim(&db, &job.key, now, now + Days::milliseconds(500))
            .await
            .unwrap()
            .expect("claimed");
        assert_eq!((claimed.state, claimed.attempts), (JobState::Running, 1));
        env.lose_queues(&db).await;

        let pool = pool(&env, &db, &step).await;
        let done = wait_state(&db, &job.key, JobState::Succeeded, 20).await;
        assert_eq!(
            done.attempts, 2,
            "{:?}: the lost attempt counts",
            env.backend
        );
        assert_eq!(step.effects(), 1);
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_slower_than_its_timeout_fails_and_dies() {
    let metrics = worker::telemetry::init_metrics();
    for mut env in Env::all().await {
        env.config.jobs.max_attempts = 2;
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep {
            delay: Duration::from_millis(1500),
            ..Default::default()
        };
        let mut options = PoolOptions::default();
        options
            .timeouts
            .insert(JobKind::InvoiceOverdue, Duration::from_millis(200));
        let pool = pool_with(&env, &db, &step, options).await;
        let job = Job::invoice_overdue(&org, "inv-timeout", Utc::now() - Days::seconds(1));
        pool.runtime()
            .enqueue(&job, Utc::now(), "test")
            .await
            .unwrap();
        let dead = wait_state(&db, &job.key, JobState::Dead, 20).await;
        assert_eq!(dead.attempts, 2);
        assert!(
            dead.last_error
                .as_deref()
                .unwrap_or("")
                .contains("timed out"),
            "{:?}",
            dead.last_error
        );
        assert_eq!(step.effects(), 0, "a timed-out step commits nothing");
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
    let text = metrics.render();
    assert!(
        text.lines().any(|l| l
            .starts_with("valora_scheduler_job_timeouts_total{job=\"invoice_overdue\"}")
            && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pools_and_a_flush_run_every_job_exactly_once() {
    for mut env in Env::all().await {
        env.config.jobs.requeue_after = Duration::from_secs(1);
        env.config.jobs.concurrency = 2;
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep {
            delay: Duration::from_millis(100),
            ..Default::default()
        };
        let pools = vec![
            pool(&env, &db, &step).await,
            pool(&env, &db, &step).await,
            pool(&env, &db, &step).await,
        ];
        let jobs: Vec<Job> = (0..40)
            .map(|i| {
                Job::invoice_finalize(
                    &org,
                    &format!("inv-chaos-{i}"),
                    Utc::now() - Days::seconds(1),
                )
            })
            .collect();
        // Every pool enqueues every job, concurrently.
        let mut tasks = vec![];
        for pool in &pools {
            let rt = pool.runtime().clone();
            let jobs = jobs.clone();
            tasks.push(tokio::spawn(async move {
                for job in &jobs {
                    rt.enqueue(job, Utc::now(), "test").await.expect("enqueue");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // The queues are lost mid-run.
        tokio::time::sleep(Duration::from_millis(150)).await;
        env.lose_queues(&db).await;
        let done_before_loss = step.effects();
        assert!(done_before_loss < 40, "the loss happens mid-run");
        for job in &jobs {
            wait_state(&db, &job.key, JobState::Succeeded, 60).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            step.effects(),
            40,
            "{:?}: each job's effect once",
            env.backend
        );
        for pool in pools {
            pool.shutdown().await.unwrap();
        }
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_lists_pages_and_discards() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let other = create_org(&db, None).await;
        let step = CountingStep::default();
        let pusher = only_pushing(&env, &db, &step).await;
        let rt = pusher.runtime().clone();
        for i in 0..5 {
            let job = Job::invoice_finalize(&org, &format!("inv-ops-{i}"), Utc::now());
            rt.enqueue(&job, Utc::now(), "test").await.unwrap();
        }
        rt.enqueue(
            &Job::invoice_finalize(&other, "inv-other", Utc::now()),
            Utc::now(),
            "test",
        )
        .await
        .unwrap();
        let first = worker::ops::list_jobs(&db, Some(&org), None, Some(JobState::Queued), 2, None)
            .await
            .unwrap();
        assert_eq!(first.jobs.len(), 2);
        assert!(first.has_next_page);
        let mut seen: Vec<String> = first.jobs.iter().map(|j| j.id.clone()).collect();
        let mut after = first.end_cursor.clone();
        while let Some(cursor) = after {
            let page = worker::ops::list_jobs(&db, Some(&org), None, None, 2, Some(&cursor))
                .await
                .unwrap();
            seen.extend(page.jobs.iter().map(|j| j.id.clone()));
            after = page.has_next_page.then_some(page.end_cursor.unwrap());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            5,
            "{:?}: tenant-scoped pages cover every job once",
            env.backend
        );
        assert!(matches!(
            worker::ops::get_job(
                &db,
                Some(&org),
                &worker::ops::list_jobs(&db, Some(&other), None, None, 1, None)
                    .await
                    .unwrap()
                    .jobs[0]
                    .id
            )
            .await,
            Err(worker::ops::OpsError::NotFound)
        ));

        // A discarded job never runs, even though its message is still queued.
        let victim = job_row(&db, "invoice_finalize:inv-ops-0:finalize")
            .await
            .unwrap();
        let discarded = worker::ops::discard_job(&db, Some(&org), &victim.id, Utc::now())
            .await
            .unwrap();
        assert_eq!(discarded.state, JobState::Discarded);
        pusher.shutdown().await.unwrap();
        let pool = pool(&env, &db, &step).await;
        for i in 1..5 {
            wait_state(
                &db,
                &format!("invoice_finalize:inv-ops-{i}:finalize"),
                JobState::Succeeded,
                20,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            job_row(&db, &victim.job_key).await.unwrap().state,
            JobState::Discarded
        );
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advancing_a_test_clock_releases_its_scheduled_jobs() {
    for env in Env::all().await {
        let db = env.connect().await;
        let frozen_at = Utc::now() - Days::days(400);
        let org = create_org(&db, Some(frozen_at)).await;
        // Recorded now, due in ten days of the organization's (frozen) time.
        let job = Job::invoice_overdue(&org, "inv-clock", frozen_at + Days::days(10));
        record_in_outbox(&db, &job, Utc::now()).await.unwrap();
        let step = CountingStep::default();
        let pool = pool(&env, &db, &step).await;
        wait_relayed(&db, env.backend).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let row = job_row(&db, &job.key).await.unwrap();
        assert_eq!(
            (row.state, row.next_attempt_at),
            (JobState::Queued, None),
            "{:?}: waits for its organization's clock, not the wall clock",
            env.backend
        );
        assert_eq!(
            worker::sweeper::pending_for_org(&db, &org, frozen_at)
                .await
                .unwrap(),
            0
        );
        // advanceTestClock: the sweeper sees the new instant and runs the job.
        let later = frozen_at + Days::days(11);
        entity::organization::Entity::update_many()
            .col_expr(
                entity::organization::Column::TestClockTime,
                sea_orm::sea_query::Expr::value(Some(later)),
            )
            .col_expr(
                entity::organization::Column::TestClockStatus,
                sea_orm::sea_query::Expr::value(Some(entity::TestClockStatus::Advancing)),
            )
            .filter(entity::organization::Column::Id.eq(org.as_str()))
            .exec(&db)
            .await
            .unwrap();
        wait_state(&db, &job.key, JobState::Succeeded, 20).await;
        assert_eq!(step.effects(), 1);
        // …and the clock settles: ADVANCING → READY once its due work is done.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = entity::organization::Entity::find_by_id(org.as_str())
                .one(&db)
                .await
                .unwrap()
                .unwrap()
                .test_clock_status;
            if status == Some(entity::TestClockStatus::Ready) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}: test clock never settled: {status:?}",
                env.backend
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            worker::sweeper::pending_for_org(&db, &org, later)
                .await
                .unwrap(),
            0,
            "{:?}: nothing left due up to the new instant",
            env.backend
        );
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

/// Due period closes go to the queue one message per `close_batch` closes of
/// an organization, since the worker a message reaches claims that many due
/// closes of its organization; other kinds get a message per job. A message
/// whose own job was taken meanwhile (by another batch) still claims the due
/// closes left, so none waits for its push to count as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn due_closes_share_a_message_per_batch() {
    for mut env in Env::all().await {
        env.config.jobs.close_batch = 4;
        let db = env.connect().await;
        let (a, b) = (create_org(&db, None).await, create_org(&db, None).await);
        let due = Utc::now() - Days::seconds(1);
        let close = |org: &str, i: usize| {
            Job::period_close(org, &format!("sub-{org}-{i}"), due - Days::days(31), due)
        };
        let mut jobs: Vec<Job> = (0..10).map(|i| close(&a, i)).collect();
        jobs.extend((0..3).map(|i| close(&b, i)));
        jobs.extend((0..2).map(|i| Job::invoice_finalize(&a, &format!("inv-{i}"), due)));
        // The real steps (closes batch), and nothing consuming yet.
        let only_push = PoolOptions {
            workers: false,
            relay: false,
            sweeper: Some(false),
            ..Default::default()
        };
        let pusher = start_with(&env.config, db.clone(), Arc::new(SystemClock), only_push)
            .await
            .expect("pool starts");
        let rt = pusher.runtime().clone();
        let now = Utc::now();
        let enqueued: Vec<(&Job, _)> = jobs.iter().map(|job| (job, now)).collect();
        let results = rt.enqueue_all(&enqueued, "test").await.expect("ledger");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(worker::runtime::Enqueued::New { pushed: true }))),
            "{:?}: {results:?}",
            env.backend
        );
        let waiting = |kind| {
            let (rt, db) = (rt.clone(), db.clone());
            async move { rt.queues.waiting(&db, kind).await.expect("queue length") }
        };
        // a: 10 closes in messages of 4, 4, 2; b: 3 in one; 2 finalizations.
        assert_eq!(
            rt.stats.pushes.load(Ordering::Relaxed),
            6,
            "{:?}",
            env.backend
        );
        assert_eq!(waiting(JobKind::PeriodClose).await, 4, "{:?}", env.backend);
        assert_eq!(
            waiting(JobKind::InvoiceFinalize).await,
            2,
            "{:?}",
            env.backend
        );
        // Every close counts as pushed: none is left to the scheduled scan.
        let closes = job_run::Entity::find()
            .filter(job_run::Column::Kind.eq("period_close"))
            .all(&db)
            .await
            .unwrap();
        assert_eq!(closes.len(), 13, "{:?}", env.backend);
        assert!(
            closes
                .iter()
                .all(|r| r.state == JobState::Queued && r.next_attempt_at.is_some()),
            "{:?}: {closes:?}",
            env.backend
        );
        pusher.shutdown().await.unwrap();

        // The first message's own job is taken (as by another worker's batch):
        // its delivery claims the other due closes instead.
        job_run::Entity::update_many()
            .col_expr(
                job_run::Column::State,
                sea_orm::sea_query::Expr::value(JobState::Succeeded),
            )
            .filter(job_run::Column::JobKey.eq(jobs[0].key.as_str()))
            .exec(&db)
            .await
            .unwrap();
        // The subscriptions do not exist, so each close fails once claimed:
        // what counts here is that every close is claimed from 4 messages.
        let consume = start_with(
            &env.config,
            db.clone(),
            Arc::new(SystemClock),
            PoolOptions {
                relay: false,
                sweeper: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("pool starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let unclaimed = loop {
            let unclaimed = job_run::Entity::find()
                .filter(job_run::Column::Kind.eq("period_close"))
                .filter(job_run::Column::Attempts.eq(0))
                .filter(job_run::Column::JobKey.ne(jobs[0].key.as_str()))
                .count(&db)
                .await
                .unwrap();
            if unclaimed == 0 || std::time::Instant::now() > deadline {
                break unclaimed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        consume.shutdown().await.unwrap();
        assert_eq!(unclaimed, 0, "{:?}: closes never claimed", env.backend);
        db.close().await.ok();
        env.cleanup().await;
    }
}

/// A domain scan that reached its last due row looks only at rows due after
/// that instant until its next pass begins, `requeue_after` later: a row
/// that became due behind it waits for that pass (steps enqueue such rows
/// themselves, through the outbox; the pass is the safety net).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_scan_looks_past_its_floor_until_the_next_pass() {
    for mut env in Env::all().await {
        env.config.jobs.requeue_after = Duration::from_secs(2);
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let customer = create_customer(&db, &org).await;
        let step = CountingStep::default();
        let pool = only_pushing(&env, &db, &step).await;
        let rt = pool.runtime().clone();
        let finalize_job = |invoice: &str, at| Job::invoice_finalize(&org, invoice, at).key;
        let mut sweeper = worker::sweeper::Sweeper::new();

        let at = Utc::now() - Days::minutes(1);
        let first = create_draft(&db, &org, &customer, at).await;
        sweeper.tick(&rt).await.expect("tick");
        assert!(job_row(&db, &finalize_job(&first, at)).await.is_some());

        // Due behind the floor (as if back-dated), and due just after it.
        let behind_at = Utc::now() - Days::minutes(2);
        let behind = create_draft(&db, &org, &customer, behind_at).await;
        let later_at = Utc::now() + Days::milliseconds(300);
        let later = create_draft(&db, &org, &customer, later_at).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        sweeper.tick(&rt).await.expect("tick");
        assert!(
            job_row(&db, &finalize_job(&later, later_at))
                .await
                .is_some(),
            "{:?}: a row due after the floor is found at once",
            env.backend
        );
        assert!(
            job_row(&db, &finalize_job(&behind, behind_at))
                .await
                .is_none(),
            "{:?}: a row behind the floor waits for the next pass",
            env.backend
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        sweeper.tick(&rt).await.expect("tick");
        assert!(
            job_row(&db, &finalize_job(&behind, behind_at))
                .await
                .is_some(),
            "{:?}: the next pass finds it",
            env.backend
        );
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

/// `valora_queue_depth`: a job recorded for later is SCHEDULED, not QUEUED
/// (it is in no queue yet); a pushed one is QUEUED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_tells_scheduled_jobs_from_queued_ones() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let step = CountingStep::default();
        let pool = only_pushing(&env, &db, &step).await;
        let rt = pool.runtime().clone();
        let now = Utc::now();
        let due = Job::invoice_finalize(&org, "inv-due", now - Days::seconds(1));
        let later = Job::invoice_finalize(&org, "inv-later", now + Days::days(30));
        for job in [&due, &later] {
            rt.enqueue(job, now, "test").await.expect("enqueue");
        }
        let depth = worker::job_runs::depth(&db, &["QUEUED", "SCHEDULED", "RUNNING"])
            .await
            .expect("depth");
        let of = |label: &str| {
            depth
                .iter()
                .find(|(kind, l, _)| kind == "invoice_finalize" && l == label)
                .map_or(0, |(_, _, n)| *n)
        };
        assert_eq!(
            (of("QUEUED"), of("SCHEDULED"), of("RUNNING")),
            (1, 1, 0),
            "{:?}: {depth:?}",
            env.backend
        );
        pool.shutdown().await.unwrap();
        db.close().await.ok();
        env.cleanup().await;
    }
}

/// On PostgreSQL one worker of the fleet holds the sweeper's turn and sweeps
/// on every tick; another sweeps only on its standby ticks, and takes the
/// turn over when the holder goes away. On SQLite every process sweeps.
#[tokio::test]
async fn one_worker_sweeps_every_tick_the_others_stand_by() {
    use worker::sweep_turn::{STANDBY_TICKS, SweepTurn};

    async fn sweeps(turn: &mut SweepTurn, ticks: u32) -> u32 {
        let mut n = 0;
        for _ in 0..ticks {
            n += u32::from(turn.sweeps_now().await);
        }
        n
    }

    let sqlite = Env::sqlite();
    let mut alone = SweepTurn::open(&sqlite.config).await;
    assert_eq!(sweeps(&mut alone, 5).await, 5, "SQLite: every tick");
    sqlite.cleanup().await;

    let Some(env) = Env::postgres().await else {
        return;
    };
    let mut first = SweepTurn::open(&env.config).await;
    let mut second = SweepTurn::open(&env.config).await;
    let ticks = 3 * STANDBY_TICKS;
    assert_eq!(
        sweeps(&mut first, ticks).await,
        ticks,
        "the holder sweeps every tick"
    );
    assert_eq!(
        sweeps(&mut second, ticks).await,
        3,
        "a standby sweeps every tenth tick"
    );
    // Closing the holder's connection frees the turn.
    first.close().await;
    let mut taken = false;
    for _ in 0..50 {
        // The standby tick comes first; the turn is free once the holder's
        // backend has gone.
        let _ = second.sweeps_now().await;
        if sweeps(&mut second, STANDBY_TICKS - 1).await == STANDBY_TICKS - 1 {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken, "the standby takes the turn over");
    second.close().await;
    env.cleanup().await;
}
