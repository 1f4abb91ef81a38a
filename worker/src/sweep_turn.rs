//! Whose turn it is to sweep: on PostgreSQL one worker of the fleet sweeps on
//! every tick, the others only every [`STANDBY_TICKS`]th tick.
//!
//! Sweeps are idempotent, so any number of sweepers is correct, but each
//! costs the database what the due work and the ledger hold: at 100,000
//! closes due, one worker's tick counted 100,000 queued jobs (100 ms) and
//! walked the ledger's stale pushes (50 ms). Four workers paid that four
//! times a second, and billed 100,000 subscriptions in 66–79 s where one
//! worker took 51 s (`docs/benchmarks.md`).
//!
//! The turn is a session-level advisory lock held on a connection of its
//! own: it passes to another worker when its holder dies or loses that
//! connection. Standbys still sweep now and then, so a holder that keeps
//! the lock but cannot push (its Redis unreachable, a stuck tick) delays
//! due work by at most [`STANDBY_TICKS`] ticks. SQLite has no advisory
//! locks and one machine: every process sweeps on every tick there.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use crate::config::Config;
use crate::database;

/// A standby sweeps on every this many ticks (10 s at the default 1 s tick).
pub const STANDBY_TICKS: u32 = 10;

/// The lock's two keys: "VALO", then 1 for the sweeper.
const LOCK: (i32, i32) = (0x5641_4C4F, 1);

/// One process's claim on the sweeper's turn.
#[derive(Debug)]
pub struct SweepTurn {
    /// The connection that holds the lock (PostgreSQL only).
    holder: Option<DatabaseConnection>,
    ticks: u32,
}

impl SweepTurn {
    /// A turn that is always this process's.
    fn always() -> SweepTurn {
        SweepTurn {
            holder: None,
            ticks: 0,
        }
    }

    /// Opens the connection that will hold the lock, on PostgreSQL. If it
    /// cannot be opened, this process sweeps on every tick, as without it.
    pub async fn open(config: &Config) -> SweepTurn {
        if config.is_sqlite() {
            return SweepTurn::always();
        }
        match database::connect_url(&config.database_url, 1).await {
            Ok(holder) => SweepTurn {
                holder: Some(holder),
                ticks: 0,
            },
            Err(e) => {
                tracing::warn!(error = %e, "no connection for the sweeper's turn; sweeping on every tick");
                SweepTurn::always()
            }
        }
    }

    /// Whether this process sweeps on this tick: it holds the turn (taking it
    /// when free), or it is a standby's tick. A failed check sweeps.
    pub async fn sweeps_now(&mut self) -> bool {
        let standby = self.ticks.is_multiple_of(STANDBY_TICKS);
        self.ticks = self.ticks.wrapping_add(1);
        let Some(holder) = &self.holder else {
            return true;
        };
        match holds_or_takes(holder).await {
            Ok(held) => held || standby,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the sweeper's turn; sweeping");
                true
            }
        }
    }

    /// Gives the turn back (closing its connection releases the lock).
    pub async fn close(self) {
        if let Some(holder) = self.holder
            && let Err(e) = holder.close().await
        {
            tracing::debug!(error = %e, "closing the sweeper's turn connection");
        }
    }
}

/// Whether `holder`'s session holds the lock, taking it when it is free. A
/// session lock is counted per acquisition, so it is taken only when not
/// held: the check reads the session's own locks first (a new connection,
/// after the pool replaced a lost one, holds none).
async fn holds_or_takes(holder: &DatabaseConnection) -> Result<bool, DbErr> {
    let row = holder
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND granted AND objsubid = 2 \
             AND classid = $1::bigint::oid AND objid = $2::bigint::oid) \
             THEN true ELSE pg_try_advisory_lock($1, $2) END AS held",
            [LOCK.0.into(), LOCK.1.into()],
        ))
        .await?;
    match row {
        Some(row) => row.try_get("", "held"),
        None => Ok(false),
    }
}
