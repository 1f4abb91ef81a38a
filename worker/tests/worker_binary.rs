//! The worker binary as operators run it: `/metrics` shows every scheduler
//! series after one tick, and SIGTERM drains the job in flight and exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, Utc};
use common::{Env, create_billable_draft, create_org, job_row, wait_state};
use entity::JobState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::QueueBackend;
use workflows::jobs::{Job, record_in_outbox};

async fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The logs of the worker bound to `addr` (for failure messages).
fn worker_log(env: &Env, addr: &str) -> String {
    std::fs::read_to_string(
        env.dir
            .join(format!("worker-{}.log", addr.replace(':', "-"))),
    )
    .unwrap_or_default()
}

fn spawn_worker(env: &Env, addr: &str, vars: &[(&str, &str)]) -> std::process::Child {
    std::fs::create_dir_all(&env.dir).expect("test directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .env("DATABASE_URL", &env.config.database_url)
        .env("VALORA_DATA_DIR", &env.dir)
        .env("VALORA_QUEUE_PREFIX", &env.config.queue_prefix)
        .env("VALORA_WORKER_BIND", addr)
        .env("VALORA_SWEEP_INTERVAL_MS", "200")
        .env("VALORA_QUEUE_POLL_MS", "50")
        .env(
            "RUST_LOG",
            std::env::var("VALORA_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::from(
            std::fs::File::create(
                env.dir
                    .join(format!("worker-{}.log", addr.replace(':', "-"))),
            )
            .expect("log file"),
        ));
    for (name, value) in vars {
        command.env(name, value);
    }
    match &env.config.queue {
        QueueBackend::Redis { url } => command.env("REDIS_URL", url),
        QueueBackend::Embedded => command.env_remove("REDIS_URL"),
    };
    command.spawn().expect("worker binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_job_is_finished_by_the_next_worker() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let due = Utc::now() - Days::seconds(1);
        let invoice = create_billable_draft(&db, &org, due).await;
        let job = Job::invoice_finalize(&org, &invoice, due);
        record_in_outbox(&db, &job, Utc::now()).await.unwrap();
        // Lease = 3 s timeout + 1 s margin; the first worker's step takes 2 s.
        let lease = [
            ("VALORA_JOB_TIMEOUT_SECS", "3"),
            ("VALORA_LEASE_MARGIN_SECS", "1"),
        ];
        let mut first = spawn_worker(
            &env,
            &format!("127.0.0.1:{}", free_port()),
            &[
                lease[0],
                lease[1],
                ("VALORA_WORKER_TEST_STEP_DELAY_MS", "2000"),
            ],
        );
        wait_state(&db, &job.key, JobState::Running, 30).await;
        first.kill().expect("SIGKILL");
        first.wait().expect("reaped");
        assert_eq!(
            job_row(&db, &job.key).await.unwrap().state,
            JobState::Running,
            "{:?}: killed mid-job",
            env.backend
        );
        let mut second = spawn_worker(&env, &format!("127.0.0.1:{}", free_port()), &lease);
        let done = wait_state(&db, &job.key, JobState::Succeeded, 30).await;
        assert_eq!(
            done.attempts, 2,
            "{:?}: the killed attempt counts",
            env.backend
        );
        let _ = Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status();
        let exit = second.wait().expect("second exits");
        assert_eq!(exit.code(), Some(0));
        db.close().await.ok();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_one_tick_and_sigterm_drains_the_job_in_flight() {
    for env in Env::all().await {
        let db = env.connect().await;
        let org = create_org(&db, None).await;
        let due = Utc::now() - Days::seconds(1);
        let invoice = create_billable_draft(&db, &org, due).await;
        let job = Job::invoice_finalize(&org, &invoice, due);
        record_in_outbox(&db, &job, Utc::now()).await.unwrap();

        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = spawn_worker(&env, &addr, &[("VALORA_WORKER_TEST_STEP_DELAY_MS", "3000")]);

        // /metrics shows every scheduler series after one tick.
        let deadline = Instant::now() + Duration::from_secs(30);
        let metrics = loop {
            if let Some(body) = get(&addr, "/metrics").await
                && worker::metrics::SCHEDULER_METRICS
                    .iter()
                    .all(|name| body.contains(name))
            {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: /metrics never showed every scheduler series",
                env.backend
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for name in worker::metrics::SCHEDULER_METRICS {
            assert!(metrics.contains(name), "{name} missing");
        }
        let health = get(&addr, "/healthz").await.expect("healthz");
        assert!(health.contains(r#"{"status":"ok"}"#), "{health}");

        // A slow job is in flight when SIGTERM arrives.
        wait_state(&db, &job.key, JobState::Running, 30).await;
        // By now it was relayed and pushed: every job-machinery series exists,
        // and the next tick's queue depth (from the ledger) shows it running.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let metrics = get(&addr, "/metrics").await.expect("metrics");
            let missing: Vec<_> = worker::metrics::ALL_METRICS
                .iter()
                .filter(|name| !metrics.contains(*name))
                .collect();
            let running = metrics
                .contains("valora_queue_depth{kind=\"invoice_finalize\",state=\"RUNNING\"} 1");
            if missing.is_empty() && running {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: missing {missing:?}, running shown: {running}",
                env.backend
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let signaled = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("wait") {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{:?}: worker did not exit after SIGTERM; its log:\n{}",
                    env.backend,
                    worker_log(&env, &addr)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!(
            "{:?}: drained and exited {:?} after SIGTERM",
            env.backend,
            signaled.elapsed()
        );
        assert_eq!(exit.code(), Some(0), "{:?}: clean exit", env.backend);
        let row = job_row(&db, &job.key).await.unwrap();
        assert_eq!(
            row.state,
            JobState::Succeeded,
            "{:?}: the in-flight job finished before exit; the worker's log:\n{}",
            env.backend,
            worker_log(&env, &addr)
        );
        db.close().await.ok();
        env.cleanup().await;
    }
}
