//! `bench`: Valora's benchmarks, each printed beside a raw SQL baseline
//! measured in the same run (see docs/benchmarks.md).
//!
//! - `bench billing-day`: N subscriptions due at one instant, closed and
//!   finalized by K worker processes; invoices/s, job latency, worker memory.
//! - `bench ingest`: usage events/s through HTTP GraphQL `ingestUsage`.
//! - `bench scaling`: the billing-day table over sizes and worker counts.
//! - `bench drop-setups`: drops the templates `billing-day --reuse-setup` keeps.
//!
//! Run with `scripts/bench …` (builds the worker binary it spawns), or
//! `cargo build --release -p worker -p tests --bin bench` and
//! `target/release/bench …`. Uses PostgreSQL and Redis at `VALORA_TEST_PG`
//! and `VALORA_TEST_REDIS` (defaults: 127.0.0.1), each run in a fresh
//! database and queue namespace.

mod billing_day;
mod ingest;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "Valora benchmarks beside raw SQL baselines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Close and finalize N subscriptions due at the same instant.
    BillingDay(billing_day::BillingDayArgs),
    /// Usage events through the HTTP GraphQL API.
    Ingest(ingest::IngestArgs),
    /// billing-day over several sizes and worker counts, as one table.
    Scaling(billing_day::ScalingArgs),
    /// Drops the setup templates `billing-day --reuse-setup` kept.
    DropSetups,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::BillingDay(args) => billing_day::run(args).await.map(|_| ()),
            Command::Ingest(args) => ingest::run(args).await,
            Command::Scaling(args) => billing_day::scaling(args).await,
            Command::DropSetups => billing_day::drop_setups().await,
        }
    })
}
