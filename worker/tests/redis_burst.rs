//! A burst of pushed tasks larger than Lua's `unpack` limit (~8,000 values)
//! reaches the worker. apalis-redis 1.0.0 promoted every due task in one
//! `unpack` on each fetch; past the limit every fetch failed and the queue
//! stayed wedged (seen in a 100,000-subscription billing day). The vendored
//! copy promotes at most 1,000 per fetch (vendor/README.md).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;

const BURST: u32 = 9_000;

async fn count(
    _n: u32,
    seen: Data<Arc<AtomicU32>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    if seen.fetch_add(1, Ordering::SeqCst) + 1 == BURST {
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
    let mut storage = RedisStorage::new(conn).with_config(config);
    // All pushed before any fetch: the first fetch finds 9,000 due tasks.
    for n in 0..BURST {
        storage.push(n).await.expect("push");
    }
    let seen = Arc::new(AtomicU32::new(0));
    let worker = WorkerBuilder::new(format!("{queue}-worker"))
        .backend(storage)
        .data(seen.clone())
        .build(count);
    tokio::time::timeout(Duration::from_secs(120), worker.run())
        .await
        .expect("every task delivered within 120 s")
        .expect("the worker ran without a backend error");
    assert_eq!(seen.load(Ordering::SeqCst), BURST);
}
