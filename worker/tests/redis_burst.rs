//! A burst of pushed tasks larger than Lua's `unpack` limit (~8,000 values)
//! reaches the worker. apalis-redis 1.0.0 promoted every due task in one
//! `unpack` on each fetch; past the limit every fetch failed and the queue
//! stayed wedged (seen in a 100,000-subscription billing day). The vendored
//! copy promotes at most 1,000 per fetch, and leases without scanning the
//! active list (vendor/README.md).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;

const BURST: u32 = 9_000;

/// Deliveries per task, and in all.
struct Seen {
    each: Vec<AtomicU32>,
    total: AtomicU32,
}

async fn count(n: u32, seen: Data<Arc<Seen>>, worker: WorkerContext) -> Result<(), BoxDynError> {
    seen.each[n as usize].fetch_add(1, Ordering::SeqCst);
    if seen.total.fetch_add(1, Ordering::SeqCst) + 1 == BURST {
        worker.stop()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_luas_unpack_limit_is_delivered() {
    let url = common::redis_url();
    let conn = match apalis_redis::connect(url.as_str()).await {
        Ok(conn) => conn,
        Err(e) if !common::servers_required() => {
            eprintln!("skipped: Redis at {url}: {e}");
            return;
        }
        Err(e) => panic!("Redis at {url}: {e}"),
    };
    let queue = format!("t{}:burst", workflows::ids::new_id());
    let config = apalis_redis::Config::default()
        .queue(queue.as_str())
        .batch_size(256);
    let active = config.active_jobs_list();
    let mut storage = RedisStorage::new(conn.clone()).with_config(config);
    // All pushed before any fetch: the first fetch finds 9,000 due tasks.
    for n in 0..BURST {
        storage.push(n).await.expect("push");
    }
    let seen = Arc::new(Seen {
        each: (0..BURST).map(|_| AtomicU32::new(0)).collect(),
        total: AtomicU32::new(0),
    });
    let worker = WorkerBuilder::new(format!("{queue}-worker"))
        .backend(storage)
        .data(seen.clone())
        .build(count);
    tokio::time::timeout(Duration::from_secs(120), worker.run())
        .await
        .expect("every task delivered within 120 s")
        .expect("the worker ran without a backend error");
    let twice: Vec<usize> = (0..BURST as usize)
        .filter(|&n| seen.each[n].load(Ordering::SeqCst) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "tasks not delivered exactly once: {twice:?}"
    );
    // Leasing (which no longer `LREM`s the active list) left nothing there.
    let left: u64 = redis::cmd("LLEN")
        .arg(&active)
        .query_async(&mut conn.clone())
        .await
        .expect("LLEN");
    assert_eq!(left, 0);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{queue}*"))
        .query_async(&mut conn.clone())
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn.clone())
            .await
            .expect("DEL");
    }
}
