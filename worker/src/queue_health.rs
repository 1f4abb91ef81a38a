//! Reachability check of the job queue backend, for readiness probes.

use crate::config::QueueBackend;

/// Why the queue backend did not answer.
#[derive(Debug, thiserror::Error)]
#[error("queue backend unreachable: {0}")]
pub struct QueueUnreachable(String);

/// Pings Redis when it carries the queues; the embedded queue lives in the
/// database, which readiness checks separately.
pub async fn ping(queue: &QueueBackend) -> Result<(), QueueUnreachable> {
    match queue {
        QueueBackend::Embedded => Ok(()),
        QueueBackend::Redis { url } => {
            let client =
                redis::Client::open(url.as_str()).map_err(|e| QueueUnreachable(e.to_string()))?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| QueueUnreachable(e.to_string()))?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| QueueUnreachable(e.to_string()))
        }
    }
}
