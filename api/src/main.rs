//! The `api` binary: serves GraphQL; in the zero-setup default it also runs the workers.

use anyhow::Context;
use clap::{Parser, Subcommand};
use worker::Config;

#[derive(Parser)]
#[command(
    name = "valora-api",
    version,
    about = "Valora billing engine: GraphQL API"
)]
struct Cli {
    /// Create a sample organization on a test clock, bill three months, print
    /// the invoices, and keep serving so they can be explored in GraphiQL.
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) and exit.
    PrintSchema,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    worker::telemetry::init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let db = worker::database::connect(&config).await?;
            worker::database::migrate(&db).await?;
            println!("migrations applied");
        }
        Command::PrintSchema => print!("{}", api::graphql::sdl()),
        Command::Serve => {
            let server = api::server::start(config)
                .await
                .context("starting the API")?;
            println!("Valora is listening on http://{}/graphql", server.addr);
            if let Some(path) = &server.admin_token_file {
                println!(
                    "Bootstrap admin token: in {path} (set VALORA_ADMIN_TOKEN to choose your own)"
                );
            }
            if cli.demo {
                println!(
                    "Demo: billing three months of a sample organization through the workers…"
                );
                let outcome = api::demo::run(&server.schema)
                    .await
                    .context("running the demo")?;
                println!("\n{}", api::demo::table(&outcome.invoices));
                println!(
                    "Explore them in GraphiQL at http://{}/graphql with the HTTP header\n  {{\"Authorization\": \"Bearer {}\"}}\n(the demo organization's ADMIN key), e.g. {{ invoices {{ nodes {{ number total lines {{ kind amount }} }} }} }}",
                    server.addr, outcome.api_key
                );
            }
            wait_for_signal().await;
            tracing::info!("shutting down: draining requests and in-flight jobs");
            server.stop().await.context("stopping the server")?;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
