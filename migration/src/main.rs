//! `migration` command line (sea-orm-migration's CLI: `up`, `down`, `status`,
//! `fresh`…); reads `DATABASE_URL`. The API and workers also migrate at start-up.

#[tokio::main]
async fn main() {
    sea_orm_migration::cli::run_cli(migration::Migrator).await;
}
